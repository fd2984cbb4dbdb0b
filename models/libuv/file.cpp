// The file effect, what Node does for a static file (fs.createReadStream piped into the socket):
// the open and 64 KiB reads run on libuv's threadpool; each chunk is written from the loop while
// the next is read. A threadpool request cannot be taken back, so state it will reach outlives a
// connection that goes away.
#include <unistd.h>

#include <algorithm>

#include "libuv.hpp"

namespace concbench::uvm {

void close_file(FileSend* f) {
    if (f->fd >= 0) close(f->fd);
    delete f;
}

static void on_fs_read(uv_fs_t* req);

// A threadpool callback found the connection gone or going: drop the file.
static bool abandoned(FileSend* f) {
    if (f->conn && !f->conn->closing()) return false;
    if (f->conn) f->conn->set_fx(Conn::Fx::none, nullptr);
    close_file(f);
    return true;
}

static void on_opened(uv_work_t* req, int) {
    auto* f = static_cast<FileSend*>(req->data);
    f->fs_busy = false;
    if (abandoned(f)) return;
    Conn* c = f->conn;
    std::size_t n = c->session->complete_file(f->fd < 0 ? -1 : f->size);
    if (n == 0) {  // 404, HEAD or an empty file: the head (in out()) is all
        c->set_fx(Conn::Fx::none, nullptr);
        close_file(f);
    } else {
        f->sending = true;
        f->left = f->unread = n;
        f->bufs[0].reset(new char[std::min(n, kFileChunk)]);
    }
    advance(c);  // writes the head, then the chunks
}

// Reads the next chunk on the threadpool into buffer `b`.
static bool read_chunk(FileSend* f, int b) {
    f->fs_busy = true;
    f->rbuf = b;
    f->fs.data = f;
    uv_buf_t buf = uv_buf_init(f->bufs[b].get(), static_cast<unsigned>(std::min(f->unread, kFileChunk)));
    int err = uv_fs_read(f->conn->tcp.loop, &f->fs, f->fd, &buf, 1, f->read_off, on_fs_read);
    if (err == 0) return true;
    uv_fs_req_cleanup(&f->fs);
    f->fs_busy = false;
    close_conn(f->conn);  // the head promised bytes that cannot come: cut the answer short
    return false;
}

// Moves the file on: writes a chunk that is read if no write is queued, starts the next read if
// a buffer is free. True once every byte is written.
bool pump_file(Conn* c, FileSend* f) {
    if (!c->writing && f->ready_len > 0) {
        std::size_t n = f->ready_len;
        f->ready_len = 0;
        uv_buf_t buf = uv_buf_init(f->bufs[f->ready_buf].get(), static_cast<unsigned>(n));
        f->wbuf = f->ready_buf;
        f->chunk = n;
        if (!write_now_or_queue(c, &buf, 1, n, true)) return false;
        if (!c->writing) {  // all taken at once
            f->left -= n;
            f->wbuf = -1;
        }
    }
    if (!f->fs_busy && f->unread > 0 && f->ready_len == 0) {
        if (f->wbuf == 0 && !f->bufs[1]) f->bufs[1].reset(new char[kFileChunk]);
        if (!read_chunk(f, f->wbuf == 0 ? 1 : 0)) return false;
    }
    return f->left == 0 && !c->writing && !f->fs_busy;
}

static void on_fs_read(uv_fs_t* req) {
    auto* f = static_cast<FileSend*>(req->data);
    ssize_t r = req->result;
    uv_fs_req_cleanup(req);
    f->fs_busy = false;
    if (abandoned(f)) return;
    Conn* c = f->conn;
    // An error, or the file shrank under us: the head promised more, so cut the answer short.
    if (r <= 0 || static_cast<std::size_t>(r) > f->unread) return close_conn(c);
    f->read_off += r;
    f->unread -= static_cast<std::size_t>(r);
    f->ready_buf = f->rbuf;
    f->ready_len = static_cast<std::size_t>(r);
    if (!c->writing) advance(c);  // otherwise on_write goes on
}

void start_file(Conn* c) {
    auto* f = new FileSend{};
    f->conn = c;
    f->opts = &worker_of(c).opts;
    f->name = c->session->effect().file;
    f->work.data = f;
    f->fs_busy = true;
    c->set_fx(Conn::Fx::file, f);
    uv_queue_work(c->tcp.loop, &f->work, [](uv_work_t* req) {
        auto* f = static_cast<FileSend*>(req->data);  // on a threadpool thread
        f->fd = open_docroot_file(*f->opts, f->name, f->size);
    }, on_opened);
}

}  // namespace concbench::uvm
