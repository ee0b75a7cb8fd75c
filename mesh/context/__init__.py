"""Context engine: token budgets, priority-stack prompt assembly, compression, sanitizing."""
