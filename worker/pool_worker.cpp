// The worker side of the pool: the task registry and worker_main, which
// serves the tasks a pool posts into the worker's shared memory (see
// worker/protocol/pool_slot.hpp).
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <streambuf>
#include <string>
#include <string_view>
#include <vector>

#include "cancellable/detail/area_streambuf.hpp"
#include "cancellable/detail/isolate_runtime.hpp"
#include "cancellable/detail/pool_map.hpp"
#include "cancellable/task.hpp"
#include "worker/child_entry.hpp"
#include "worker/protocol/futex.hpp"
#include "worker/protocol/keeper_messages.hpp"
#include "worker/protocol/pool_slot.hpp"
#include "worker/protocol/result_channel.hpp"
#include "worker/work_stop.hpp"
#include "worker/worker_program.hpp"

namespace cancellable {
namespace detail {
namespace {

struct TaskRegistry {
  std::mutex mutex;
  std::map<std::string, TaskInvoker, std::less<>> tasks;
};

// Built on first use: registrations run during static initialisation, in
// any order.
TaskRegistry& task_registry() {
  static TaskRegistry registry;
  return registry;
}

TaskInvoker find_task(std::string_view name) {
  auto& registry = task_registry();
  std::lock_guard lock(registry.mutex);
  const auto found = registry.tasks.find(name);
  return found == registry.tasks.end() ? nullptr : found->second;
}

// Exit statuses of a worker that could not set itself up (the pool reports
// them when the worker dies before it is ready).
constexpr int kExitBadArguments = 64;  // EX_USAGE
constexpr int kExitBadSlot = 65;       // EX_DATAERR: descriptor 3 is not a pool's memory
constexpr int kExitSetup = 71;         // EX_OSERR: prctl or setrlimit failed
constexpr int kPoolExitParentGone = 0;

int warm_up_task() { return 0; }
constexpr Task<int()> warm_up{"cancellable.internal.warm_up"};
CANCELLABLE_TASK(warm_up, warm_up_task);

// Runs the path of a task once before the worker says it is ready: its code
// and the first pages of the argument and result areas are then mapped in,
// and a fresh worker's first task (often the one right after a kill, on the
// standby) costs what any other does.
void warm_up_once(PoolSlot* slot, std::uint64_t args_capacity, std::uint64_t result_capacity) {
  try {
    std::memset(slot->args(), 0, std::min<std::uint64_t>(args_capacity, 4096));
    AreaStreambuf args(slot->args(), args_capacity);
    std::ostream args_out(&args);
    encode_result(std::tuple<>{}, args_out);
    args_out.flush();
    AreaStreambuf writer(slot->result(), result_capacity);
    std::ostream out(&writer);
    if (const TaskInvoker invoker = find_task(warm_up.name)) invoker(slot->args(), args.written(), out);
    out.flush();
    (void)encode_exception(std::make_exception_ptr(std::runtime_error("warm-up")), std::nullopt, 1024);
  } catch (...) {
    // (Only a warm-up.)
  }
}

// The task's CPU limit, enforced by the kernel as for a fork isolate:
// RLIMIT_CPU over the CPU time the worker has used so far, SIGXCPU (its
// default action ends the worker) at the limit, and SIGKILL at the hard
// limit one second later if the task ignores or catches SIGXCPU. A hard
// limit cannot be raised again: the pool replaces a worker after a task
// with a CPU limit.
void set_cpu_limit(std::uint64_t limit_seconds) {
  rlimit limit{};
  if (::getrlimit(RLIMIT_CPU, &limit) != 0) return;
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  const auto used = static_cast<rlim_t>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec + 1);
  if (limit.rlim_max != RLIM_INFINITY && used + limit_seconds + 1 > limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;  // (the inherited hard limit comes first)
  } else {
    limit.rlim_cur = used + limit_seconds;
    limit.rlim_max = limit.rlim_cur + 1;
  }
  (void)::setrlimit(RLIMIT_CPU, &limit);
}

// A chunk of WorkerPool::map (cancellable/detail/pool_map.hpp): runs each
// input in order, and stops at the first that throws. A result area that
// overflows is left to serve() (too_large).
void run_map_chunk(const char* args, std::size_t args_bytes, std::ostream& out, const AreaStreambuf& writer,
                   std::optional<std::size_t> memory_limit, std::size_t max_result) {
  const auto bad = [] { return std::invalid_argument("WorkerPool::map: the chunk's arguments are malformed"); };
  MapArgsTrailer trailer;
  if (args_bytes < sizeof trailer) throw bad();
  std::memcpy(&trailer, args + args_bytes - sizeof trailer, sizeof trailer);
  std::size_t left = args_bytes - sizeof trailer;
  if (trailer.magic != kMapMagic || trailer.name_size > left) throw bad();
  left -= trailer.name_size;
  const std::string_view name(args + left, trailer.name_size);
  if (trailer.inputs >= left / sizeof(std::uint64_t)) throw bad();
  const std::size_t n = trailer.inputs;
  left -= (n + 1) * sizeof(std::uint64_t);
  std::vector<std::uint64_t> offsets(n + 1);
  std::memcpy(offsets.data(), args + left, offsets.size() * sizeof(std::uint64_t));
  for (std::size_t i = 0; i < n; ++i)
    if (offsets[i] > offsets[i + 1] || offsets[i + 1] > left) throw bad();
  const TaskInvoker invoker = find_task(name);
  if (!invoker) {
    throw std::invalid_argument("no task named '" + std::string(name) + "' is registered in this worker program");
  }
  std::vector<std::uint64_t> done{0};
  done.reserve(n + 1);
  MapResultTrailer result;
  std::string error;
  for (std::size_t i = 0; i < n; ++i) {
    report_progress_impl(i, n, nullptr, 0);  // (a crash in input i is reported as input i)
    try {
      invoker(args + offsets[i], offsets[i + 1] - offsets[i], out);
      out.flush();
    } catch (...) {
      error = encode_exception(std::current_exception(), memory_limit, std::min<std::size_t>(max_result, 64 << 10));
      result.failed = 1;
      break;
    }
    if (writer.overflowed()) return;
    done.push_back(writer.total());
  }
  report_progress_impl(done.size() - 1, n, nullptr, 0);
  result.done = done.size() - 1;
  result.error_size = error.size();
  out.write(reinterpret_cast<const char*>(done.data()), static_cast<std::streamsize>(done.size() * sizeof(std::uint64_t)));
  out.write(error.data(), static_cast<std::streamsize>(error.size()));
  out.write(reinterpret_cast<const char*>(&result), sizeof result);
  out.flush();
}

[[noreturn]] void serve(PoolSlot* slot, std::uint64_t args_capacity, std::uint64_t result_capacity,
                        std::optional<std::size_t> memory_limit) {
  set_worker_process_header(slot);  // (report_progress, from any thread of a task)
  warm_up_once(slot, args_capacity, result_capacity);
  slot->response.store(PoolSlot::kReady, std::memory_order_release);
  futex_wake_all(slot->response);
  for (std::uint32_t next = PoolSlot::kFirstTask;; ++next) {
    for (std::uint32_t seen; (seen = slot->request.load(std::memory_order_acquire)) != next;) {
      futex_wait(slot->request, seen);
    }
    const std::string_view name(slot->task_name, std::min<std::size_t>(slot->task_name_size, PoolSlot::kMaxTaskName));
    const std::size_t args_bytes = std::min<std::uint64_t>(slot->args_bytes, args_capacity);
    const std::size_t max_result = std::min<std::uint64_t>(slot->max_result_bytes, result_capacity);
    AreaStreambuf writer(slot->result(), max_result);
    PoolSlot::Outcome outcome = PoolSlot::Outcome::value;
    std::size_t payload = 0;
    const std::uint64_t cpu_limit = slot->cpu_limit_seconds;
    if (cpu_limit != 0) set_cpu_limit(cpu_limit);
    begin_process_work(slot, next);  // (work_stop_token(): the stop word the pool writes is this number)
    try {
      std::ostream out(&writer);
      if (name == kMapTaskName) {
        run_map_chunk(slot->args(), args_bytes, out, writer, memory_limit, max_result);
      } else {
        const TaskInvoker invoker = find_task(name);
        if (!invoker) {
          throw std::invalid_argument("no task named '" + std::string(name) +
                                      "' is registered in this worker program");
        }
        invoker(slot->args(), args_bytes, out);
        out.flush();
      }
      if (writer.overflowed()) {
        outcome = PoolSlot::Outcome::too_large;
        payload = writer.total();
      } else {
        payload = writer.written();
      }
    } catch (...) {
      // (An exception's text is cut to fit the result area.)
      const std::string bytes = encode_exception(std::current_exception(), memory_limit,
                                                 std::min<std::size_t>(max_result, result_capacity));
      payload = std::min<std::size_t>(bytes.size(), result_capacity);
      std::memcpy(slot->result(), bytes.data(), payload);
      outcome = PoolSlot::Outcome::exception;
    }
    slot->outcome = static_cast<std::uint32_t>(outcome);
    slot->payload_bytes = payload;
    slot->response.store(next, std::memory_order_release);
    futex_wake_all(slot->response);
  }
}

}  // namespace

TaskInvoker find_pool_task(std::string_view name) { return find_task(name); }

bool register_pool_task(std::string_view name, TaskInvoker invoker) {
  auto& registry = task_registry();
  std::lock_guard lock(registry.mutex);
  return registry.tasks.emplace(std::string(name), invoker).second;
}

}  // namespace detail

namespace detail {
namespace {
std::atomic<bool> worker_main_called{false};
}  // namespace
bool worker_main_was_called() noexcept { return worker_main_called.load(std::memory_order_acquire); }
}  // namespace detail

void worker_main(int argc, char** argv) {
  using namespace detail;
  worker_main_called.store(true, std::memory_order_release);
  if (argc == 3 && std::strcmp(argv[1], kKeeperFlag) == 0) {
    const pid_t parent = static_cast<pid_t>(std::strtol(argv[2], nullptr, 10));
    const pid_t keeper = ::fork();  // (Of this small program, never of the pool's process.)
    if (keeper == 0) run_keeper(kKeeperDescriptor, parent);
    ::_exit(keeper < 0 ? kExitSetup : 0);
  }
  if (argc < 2 || std::strcmp(argv[1], kPoolWorkerFlag) != 0) return;
  if (argc < 3) ::_exit(kExitBadArguments);
  const pid_t parent = static_cast<pid_t>(std::strtol(argv[2], nullptr, 10));
  std::optional<std::size_t> memory_limit;
  if (argc > 3) memory_limit = static_cast<std::size_t>(std::strtoull(argv[3], nullptr, 10));

  // The shared memory: descriptor 3, as large as its header says. (First:
  // a later step that fails is reported there, with its errno.)
  struct stat st {};
  if (::fstat(kPoolSlotDescriptor, &st) != 0 || static_cast<std::size_t>(st.st_size) < PoolSlot::kHeaderBytes) {
    ::_exit(kExitBadSlot);
  }
  void* header = ::mmap(nullptr, PoolSlot::kHeaderBytes, PROT_READ, MAP_SHARED, kPoolSlotDescriptor, 0);
  if (header == MAP_FAILED) ::_exit(kExitBadSlot);
  const auto* peek = static_cast<const PoolSlot*>(header);
  const std::uint64_t args_capacity = peek->args_capacity;
  const std::uint64_t result_capacity = peek->result_capacity;
  const bool valid = peek->magic == PoolSlot::kMagic && peek->version == PoolSlot::kVersion &&
                     args_capacity < (std::uint64_t{1} << 40) && result_capacity < (std::uint64_t{1} << 40) &&
                     PoolSlot::total_bytes(args_capacity, result_capacity) == static_cast<std::size_t>(st.st_size);
  ::munmap(header, PoolSlot::kHeaderBytes);
  if (!valid) ::_exit(kExitBadSlot);
  void* memory = ::mmap(nullptr, static_cast<std::size_t>(st.st_size), PROT_READ | PROT_WRITE, MAP_SHARED,
                        kPoolSlotDescriptor, 0);
  if (memory == MAP_FAILED) ::_exit(kExitBadSlot);
  ::close(kPoolSlotDescriptor);
  auto* slot = static_cast<PoolSlot*>(memory);

  // Die with the pool's process: the signal at its death, and a check that
  // it has not died already (before the prctl).
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) {
    report_setup_failure(slot, SetupStep::death_signal, errno);
    ::_exit(kExitSetup);
  }
  if (::getppid() != parent) ::_exit(kPoolExitParentGone);
  ::setenv(kPoolWorkerEnvironment, "1", 1);

  // As for a process isolate: the data size now plus the limit.
  if (memory_limit) {
    if (const int error = limit_data_growth(*memory_limit)) {
      report_setup_failure(slot, SetupStep::memory_limit, error);
      ::_exit(kExitSetup);
    }
  }
  serve(slot, args_capacity, result_capacity, memory_limit);
}

}  // namespace cancellable
