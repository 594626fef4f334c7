/*
 * The loop's single wake-up for every call's MediaPipe (native/media_pipe.hpp), compiled into the
 * pjsua2 Python module with the other native/ headers (native/build-pjsua2.sh). GPL-2.0-or-later,
 * like PJSIP.
 *
 *   MediaWakeup      one per process: the eventfd and the list of pipes with work. The clock
 *                    thread posts a pipe (a whole chunk of caller audio, a mark's audio played
 *                    out, a latency probe passed); the asyncio loop reads the eventfd and take()s
 *                    the pipes' ids, so it is woken once for every call with work, never per call.
 */
#ifndef BRIDGE_MEDIA_WAKEUP_HPP
#define BRIDGE_MEDIA_WAKEUP_HPP

#include <pjsua2/media.hpp>
#include <vector>
#include <string>

#ifndef SWIG
#include <Python.h>
#include <atomic>
#include <mutex>
#include <memory>
#include <algorithm>
#include <cstring>
#include <ctime>
#include <cerrno>
#include <unistd.h>
#include <sys/eventfd.h>
#include <pjsua-lib/pjsua.h>
#ifndef THIS_FILE
#define THIS_FILE "media_wakeup.hpp"
#endif
#endif

namespace pj {

class MediaPipe;

#ifndef SWIG
static inline double bridge_monotonic()
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);  /* the clock of Python's time.monotonic() on Linux */
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Shared by the MediaWakeup and its pipes, so whichever Python drops last (interpreter exit
 * clears modules in any order) frees it. */
struct MediaWakeupCore {
    int fd = -1;
    std::mutex lock;
    std::vector<MediaPipe *> pending;
    ~MediaWakeupCore() { if (fd >= 0) close(fd); }

    void post(MediaPipe *pipe)
    {
        bool first;
        {
            std::lock_guard<std::mutex> g(lock);
            first = pending.empty();
            pending.push_back(pipe);
        }
        if (first) {
            uint64_t one = 1;
            ssize_t r = ::write(fd, &one, sizeof(one));
            (void)r;  /* EAGAIN only when the counter is saturated: the fd is readable anyway */
        }
    }

    void forget(MediaPipe *pipe)
    {
        std::lock_guard<std::mutex> g(lock);
        pending.erase(std::remove(pending.begin(), pending.end(), pipe), pending.end());
    }
};
#endif

/* The loop's single wake-up for every pipe: readable when some pipe has work; take() lists them. */
class MediaWakeup {
public:
    MediaWakeup() PJSUA2_THROW(Error)
    {
        int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (fd < 0)
            PJSUA2_RAISE_ERROR2(PJ_RETURN_OS_ERROR(errno), "MediaWakeup()");
        core_ = std::make_shared<MediaWakeupCore>();
        core_->fd = fd;
    }

    int getFd() const { return core_->fd; }

    /* Ids of the pipes that posted work since the last call (each once), oldest first. Defined
     * in media_pipe_send.hpp, where MediaPipe is complete. */
    IntVector take();

#ifndef SWIG
    std::shared_ptr<MediaWakeupCore> core() const { return core_; }
private:
    std::shared_ptr<MediaWakeupCore> core_;
#endif
};

} // namespace pj

#endif
