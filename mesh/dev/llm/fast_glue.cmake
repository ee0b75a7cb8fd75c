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
endfunction()
