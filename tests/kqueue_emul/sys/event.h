/* kevent emulation for Linux — TEST ONLY, never used for numbers. The subset of FreeBSD's
 * <sys/event.h> (kqueue(2)) that models/common/backend_kqueue.cpp and its tests use, written from
 * the kqueue(2) manual page and implemented over epoll in kevent_emul.cpp, so the kqueue backend
 * and server-kqueue can be built and verified on Linux. Its timings are epoll's plus a userspace
 * translation: a model built on it is never measured (model.toml: [emulated.linux] run = "refused").
 * Emulated: EVFILT_READ and EVFILT_WRITE on fds that epoll accepts (sockets, pipes, eventfds);
 * EV_ADD, EV_DELETE, EV_ENABLE, EV_DISABLE, EV_ONESHOT, EV_CLEAR (EPOLLET: the READ and WRITE
 * filters of one fd must agree on it, else EINVAL), EV_RECEIPT; EV_EOF and EV_ERROR out.
 * EVFILT_TIMER is defined (FreeBSD's value) but not emulated: a change naming it fails with EINVAL. */
#ifndef CONCBENCH_KQUEUE_EMUL_SYS_EVENT_H
#define CONCBENCH_KQUEUE_EMUL_SYS_EVENT_H

#include <stdint.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

struct kevent {
    uintptr_t ident;      /* the fd (READ, WRITE) */
    short filter;         /* EVFILT_* */
    unsigned short flags; /* EV_* */
    unsigned int fflags;  /* out: with EV_EOF, the socket's pending error (SO_ERROR) if any */
    int64_t data;         /* out: READ bytes readable, WRITE send-buffer space; EV_ERROR: errno */
    void* udata;          /* passed through unchanged */
};

/* Filters (FreeBSD's values). */
#define EVFILT_READ (-1)
#define EVFILT_WRITE (-2)
#define EVFILT_TIMER (-7) /* not emulated: EINVAL */

/* Actions and flags in (FreeBSD's values). */
#define EV_ADD 0x0001     /* add the filter, or modify it if it exists (enables it) */
#define EV_DELETE 0x0002  /* remove it (ENOENT if absent) */
#define EV_ENABLE 0x0004  /* report its events again */
#define EV_DISABLE 0x0008 /* keep it, but report nothing */
#define EV_ONESHOT 0x0010 /* deleted after its first event is returned */
#define EV_CLEAR 0x0020   /* state reset once returned: edge-triggered */
#define EV_RECEIPT 0x0040 /* always return an EV_ERROR entry for this change (data 0 = success) */
/* Flags out. */
#define EV_ERROR 0x4000 /* a change failed (or EV_RECEIPT): data = errno, 0 for success */
#define EV_EOF 0x8000   /* the peer closed (READ: no more bytes after `data`) or the fd errored */

#define EV_SET(kevp, a, b, c, d, e, f)    \
    do {                                  \
        struct kevent* ev_set_ = (kevp);  \
        ev_set_->ident = (a);             \
        ev_set_->filter = (b);            \
        ev_set_->flags = (c);             \
        ev_set_->fflags = (d);            \
        ev_set_->data = (e);              \
        ev_set_->udata = (f);             \
    } while (0)

/* A new kqueue: a real fd (close() it as usual). -1 with errno on failure. */
int kqueue(void);

/* Applies `changelist`, then waits up to `timeout` (NULL: forever; {0,0}: poll) for events and
 * fills at most `nevents` of `eventlist`; returns how many. A failed change (or one with
 * EV_RECEIPT) is returned as an EV_ERROR entry, and then kevent returns at once with those
 * entries only; with no room left for it, kevent returns -1 with errno and stops there. EINTR:
 * every change was applied. */
int kevent(int kq, const struct kevent* changelist, int nchanges, struct kevent* eventlist, int nevents,
           const struct timespec* timeout);

#ifdef __cplusplus
}
#endif

#endif
