# Injected with -DCMAKE_PROJECT_INCLUDE when mesh builds llama-server (mesh/dev/_llm.py).
# The inference kernels (ggml, llama) keep the Release flags (-O3). The HTTP/JSON/CLI glue of the
# server (nlohmann-json heavy C++, most of the compile time) is built with -O0: it handles a few
# kilobytes per request, so optimising it buys nothing measurable but costs half the build.
# The glue's many small files each parse the same heavy headers, so they are compiled in unity
# batches, as llama.cpp itself does for src/ (no file-scope name is defined in two of them;
# files that cannot share a unit are left out below).
cmake_language(DEFER DIRECTORY ${CMAKE_SOURCE_DIR} CALL _mesh_fast_glue)
function(_mesh_fast_glue)
    foreach(target llama-common llama-common-base server-context llama-server-impl llama-server
                   cpp-httplib mtmd llama-ui)
        if(TARGET ${target})
            target_compile_options(${target} PRIVATE -O0)
        endif()
    endforeach()
    # common/: all but the per-model chat parsers (kept one by one) and json.cpp (it specializes
    # common_json::get<T> after other files have instantiated it).
    _mesh_unity(llama-common 10 "(^|/)(parsers/.*|json\\.cpp)$")
    # tools/server: the server's core and its HTTP front.
    _mesh_unity(server-context 5 "^$")
    _mesh_unity(llama-server-impl 3 "^$")
    # tools/mtmd: only the ~45 vision/audio encoder graphs (unused for text, linked in anyway).
    _mesh_unity(mtmd 12 "^(.*/)?(mtmd|clip)[^/]*$")
endfunction()

# UNITY_BUILD for `target` in batches of `batch`, leaving out sources whose path matches `apart`.
function(_mesh_unity target batch apart)
    if(NOT TARGET ${target})
        return()
    endif()
    get_target_property(sources ${target} SOURCES)
    get_target_property(dir ${target} SOURCE_DIR)
    set_target_properties(${target} PROPERTIES UNITY_BUILD ON UNITY_BUILD_BATCH_SIZE ${batch})
    foreach(src IN LISTS sources)
        if(src MATCHES "${apart}")
            # relative names would resolve against this (the top) directory, not the target's
            cmake_path(ABSOLUTE_PATH src BASE_DIRECTORY ${dir})
            set_source_files_properties(${src} TARGET_DIRECTORY ${target} PROPERTIES SKIP_UNITY_BUILD_INCLUSION ON)
        endif()
    endforeach()
endfunction()
