# Runs the benchmark with --json and checks that every line is one JSON
# object with the keys, in order, that scripts consuming it rely on.
execute_process(COMMAND ${BENCH} --quick --json --only ${SCENARIO}
  OUTPUT_VARIABLE out RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "cancellable-bench exited with ${rc}")
endif()
string(STRIP "${out}" out)
string(REPLACE "\n" ";" lines "${out}")
list(LENGTH lines count)
if(count LESS 1)
  message(FATAL_ERROR "expected rows, got: ${out}")
endif()
set(number "[0-9]+(\\.[0-9]+)?")
foreach(line IN LISTS lines)
  if(NOT line MATCHES "^{\"bench\": \"[a-z_0-9]+\", \"backend\": \"[a-z_0-9]+\", \"samples\": [1-9][0-9]*, \"p50_us\": ${number}, \"p99_us\": ${number}, \"max_us\": ${number}(, .*)?}$")
    message(FATAL_ERROR "bad JSON line: ${line}")
  endif()
  # A wake-up goal is a ratio to a baseline of the same run: the row says which and carries it.
  if(line MATCHES "\"goal\": \"(p99|max) <= [0-9.]+x std_promise" AND NOT line MATCHES "\"baseline\": \"std_promise[a-z_0-9]*\", \"ratio_p50\": ${number}, \"ratio_p99\": ${number}")
    message(FATAL_ERROR "a wake-up goal without its baseline and ratio_p99: ${line}")
  endif()
endforeach()
message(STATUS "${count} rows ok")
