# Injected with -DCMAKE_PROJECT_INCLUDE when mesh builds llama-server (mesh/dev/_llm.py).
# The inference kernels (ggml, llama) keep the Release flags (-O3). The HTTP/JSON/CLI glue of the
# server (nlohmann-json heavy C++, most of the compile time) is built with -O0: it handles a few
# kilobytes per request, so optimising it buys nothing measurable but costs half the build.
cmake_language(DEFER DIRECTORY ${CMAKE_SOURCE_DIR} CALL _mesh_fast_glue)
function(_mesh_fast_glue)
    foreach(target llama-common llama-common-base server-context llama-server-impl llama-server
                   cpp-httplib mtmd llama-ui)
        if(TARGET ${target})
            target_compile_options(${target} PRIVATE -O0)
        endif()
    endforeach()
    # The ~45 vision/audio encoder graphs of mtmd (unused for text, but linked into the server)
    # each parse the same heavy headers: compiled in unity batches, as llama.cpp does for src/.
    # Only models/*.cpp (no file-scope name is defined twice there); the rest of mtmd stays apart.
    if(TARGET mtmd)
        get_target_property(sources mtmd SOURCES)
        get_target_property(dir mtmd SOURCE_DIR)
        set_target_properties(mtmd PROPERTIES UNITY_BUILD ON UNITY_BUILD_BATCH_SIZE 12)
        foreach(src IN LISTS sources)
            if(NOT src MATCHES "(^|/)models/[^/]+\\.cpp$")
                # relative names would resolve against this (the top) directory, not mtmd's
                cmake_path(ABSOLUTE_PATH src BASE_DIRECTORY ${dir})
                set_source_files_properties(${src} TARGET_DIRECTORY mtmd PROPERTIES SKIP_UNITY_BUILD_INCLUSION ON)
            endif()
        endforeach()
    endif()
endfunction()
