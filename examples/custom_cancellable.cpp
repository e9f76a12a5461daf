// A custom cancellable: a blocking read from a pipe that a token can
// interrupt. on_cancel releases the resource the operation holds (the pipe's
// write end), so the blocked reader wakes at once with end-of-file.
#include <cancellable/cancellable.hpp>

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <iostream>
#include <string>
#include <system_error>
#include <thread>

namespace {

class PipeRead final : public cancellable::Cancellable {
 public:
  explicit PipeRead(const cancellable::CancellationToken& token) {
    int fds[2];
    if (::pipe(fds) != 0) throw std::system_error(errno, std::generic_category(), "pipe");
    read_end_ = fds[0];
    write_end_ = fds[1];
    // Attach last: if the token is already cancelled, on_cancel runs right here.
    maybe_attach(token);
  }

  ~PipeRead() override {
    detach();  // before the members go: on_cancel can no longer run
    release_write_end();
    ::close(read_end_);
  }

  // Blocks until data arrives or the token is cancelled; then throws the
  // token's exception.
  std::string read() {
    char buffer[256];
    const ssize_t n = ::read(read_end_, buffer, sizeof buffer);
    if (is_cancelled()) std::rethrow_exception(cancellation_token().exception());
    detach();  // finished normally: nothing left attached
    return std::string(buffer, n > 0 ? static_cast<std::size_t>(n) : 0);
  }

  bool write_end_released() const { return write_end_.load() < 0; }

 private:
  void on_cancel(std::exception_ptr) override { release_write_end(); }

  void release_write_end() {
    const int fd = write_end_.exchange(-1);
    if (fd >= 0) ::close(fd);
  }

  int read_end_ = -1;
  std::atomic<int> write_end_{-1};
};

}  // namespace

int main() {
  cancellable::CancellationToken token;
  PipeRead pending_read(token);
  std::thread canceller([&] { token.cancel_with_reason("user navigated away"); });
  try {
    pending_read.read();
    std::cout << "read finished without cancellation\n";
  } catch (const cancellable::CancelledException& e) {
    std::cout << "read interrupted: " << e.what() << "\n";
  }
  canceller.join();
  std::cout << "write end released in on_cancel: "
            << (pending_read.write_end_released() ? "yes" : "no") << "\n";
  std::cout << "left attached to the token: " << (token.has_cancellables() ? "yes" : "no") << "\n";
  return 0;
}
