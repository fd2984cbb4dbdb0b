// Docroot files for the `file` workloads (see docroot.hpp).
#include "concbench/docroot.hpp"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace concbench {

bool write_docroot_file(const std::string& docroot, const Workload& w, std::string& error) {
    namespace fs = std::filesystem;
    fs::path path = fs::path(docroot) / w.file_name;
    std::error_code ec;
    if (fs::is_regular_file(path, ec) && fs::file_size(path, ec) == w.file_size) return true;
    fs::create_directories(docroot, ec);
    fs::path tmp = path;
    tmp += ".tmp";
    {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        std::string block(64 * 1024, '\0');
        for (std::size_t i = 0; i < block.size(); ++i) block[i] = pattern_byte(i);  // 64 | 64 KiB
        for (std::size_t left = w.file_size; out && left > 0;) {
            std::size_t n = std::min(left, block.size());
            out.write(block.data(), static_cast<std::streamsize>(n));
            left -= n;
        }
        if (!out) {
            error = "cannot write " + tmp.string() + ": " + std::strerror(errno);
            return false;
        }
    }
    fs::rename(tmp, path, ec);  // complete or absent: a run killed half-way leaves no short file
    if (ec) {
        error = "cannot create " + path.string() + ": " + ec.message();
        return false;
    }
    return true;
}

}  // namespace concbench
