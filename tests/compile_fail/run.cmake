cmake_policy(SET CMP0057 NEW)  # if(IN_LIST)
# Compiles tests/compile_fail/result_types.cpp once per case: the cases that
# must be rejected fail with the codec's message, the others compile (so a
# failure is the check's, not a broken build line's).
set(rejected string_view span struct_with_pointer struct_with_view raw_pointer vector_of_views
    argument_struct_with_pointer argument_string_view)
set(accepted plain_struct serializable_struct argument_plain_struct)
string(REPLACE "|" ";" include_flags "${INCLUDES}")
set(failures "")
foreach(case IN LISTS rejected accepted)
  execute_process(
    COMMAND ${CXX} -std=c++20 -fsyntax-only ${include_flags} -DCASE_${case} ${SOURCE}
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(case IN_LIST accepted)
    if(NOT rc EQUAL 0)
      string(APPEND failures "${case}: should compile, failed:\n${err}\n")
    endif()
  elseif(rc EQUAL 0)
    string(APPEND failures "${case}: compiled, should have been rejected\n")
  elseif(NOT err MATCHES "must be plain data .* or serializable with cereal")
    string(APPEND failures "${case}: rejected without the codec's message:\n${err}\n")
  else()
    message(STATUS "${case}: rejected with the codec's message")
  endif()
endforeach()
if(failures)
  message(FATAL_ERROR "${failures}")
endif()
message(STATUS "compile-fail: every case as expected")
