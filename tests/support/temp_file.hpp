// Files and paths in the temporary directory that go away with the object,
// however the test ends. (The one implementation for every test.)
#pragma once

#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <system_error>

namespace test_support {

// A fresh file (mkstemp) holding `contents`, removed with the object.
class TempFile {
 public:
  explicit TempFile(const std::string& contents) {
    std::string name = (std::filesystem::temp_directory_path() / "cancellable-test-XXXXXX").string();
    const int fd = ::mkstemp(name.data());
    if (fd < 0) throw std::system_error(errno, std::generic_category(), "mkstemp");
    ::close(fd);
    path_ = name;
    std::ofstream(path_, std::ios::binary) << contents;
  }
  ~TempFile() {
    std::error_code ignored;
    std::filesystem::remove(path_, ignored);
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A path named after `name` and this process (nothing is created), removed
// with the object, file or directory and all it holds.
class TempPath {
 public:
  explicit TempPath(const std::string& name)
      : path(std::filesystem::temp_directory_path() /
             ("cancellable-test-" + name + "-" + std::to_string(::getpid()))) {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
  ~TempPath() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
  TempPath(const TempPath&) = delete;
  TempPath& operator=(const TempPath&) = delete;
  std::filesystem::path path;
};

}  // namespace test_support
