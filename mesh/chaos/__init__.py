"""Fault campaigns: a history of what every process did, a checker over it, and a report.

``mesh chaos run`` (added to ``mesh/chaos/cli.py``'s group by ``agents/cli.py``) drives a campaign of scenarios (agents SIGKILLed,
SIGTERMed, SIGSTOPped; Redis and Kafka killed and restarted; network cuts; hostile records...)
against real processes, records a :class:`History` from the workflow log, the trace and
dead-letter topics, the mock services' audit log and the store, and :func:`check` finds the
anomalies in it, each with the events that prove it. The workload and the scenarios live in
``agents/campaign.py`` (they run the example agents against the mock EHR).
"""

from mesh.chaos._checker import ANOMALY_KINDS, IN_DOUBT_EVENTS, Anomaly, CheckResult, Figures, check
from mesh.chaos._history import SOURCES, Event, History
from mesh.chaos._report import CampaignReport, ScenarioResult

__all__ = [
    # history
    "SOURCES",
    "Event",
    "History",
    # checker
    "ANOMALY_KINDS",
    "IN_DOUBT_EVENTS",
    "Anomaly",
    "CheckResult",
    "Figures",
    "check",
    # report
    "CampaignReport",
    "ScenarioResult",
]
