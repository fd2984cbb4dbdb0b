// The docroot of the `file` workloads: files of the /bytes pattern, so a client checks every byte
// it receives without reading the files back.
#pragma once
#include <string>

#include "concbench/workloads.hpp"

namespace concbench {

// Writes `w.file_name` (w.file_size bytes of the pattern) into `docroot` unless a file of that
// size is already there. Returns false with a one-line `error` on failure.
bool write_docroot_file(const std::string& docroot, const Workload& w, std::string& error);

}  // namespace concbench
