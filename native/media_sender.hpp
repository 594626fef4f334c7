/*
 * The process's native sender thread (one per process), compiled into the pjsua2 Python module
 * with the other native/ headers (native/build-pjsua2.sh). GPL-2.0-or-later, like PJSIP.
 *
 *   MediaSender      a thread that writes caller audio to the bots' sockets: the clock thread
 *                    hands it a pipe with a completed chunk (post), it renders the dialect's
 *                    message from the pipe's template (media_template.hpp), masks it as a client
 *                    frame and writes it to the pipe's duplicate of the socket (media_pipe_send.hpp
 *                    holds MediaSenderCore::run and the pipe's side of it).
 */
#ifndef BRIDGE_MEDIA_SENDER_HPP
#define BRIDGE_MEDIA_SENDER_HPP

#include <pjsua2/media.hpp>

#ifndef SWIG
#include <atomic>
#include <mutex>
#include <memory>
#include <cstring>
#include <cerrno>
#include <thread>
#include <unordered_set>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <pjsua-lib/pjsua.h>
#ifndef THIS_FILE
#define THIS_FILE "media_sender.hpp"
#endif
#endif

namespace pj {

class MediaPipe;

#ifndef SWIG
/* The sender thread's state. Lock order: procLock, then a pipe's locks; listLock alone. */
struct MediaSenderCore {
    int wakeFd = -1;
    std::mutex listLock;
    std::vector<MediaPipe *> pending;       /* pipes with a chunk due (listLock) */
    std::mutex procLock;                    /* held while one pipe is worked on */
    std::unordered_set<MediaPipe *> attached;  /* procLock: only these may be touched */
    std::atomic<bool> stopping{false};
    std::mutex keyLock;                     /* masking keys, drawn by every pipe */
    unsigned char keys[4096];
    size_t keyPos = sizeof(keys);
    ~MediaSenderCore() { if (wakeFd >= 0) close(wakeFd); }

    void wake()
    {
        uint64_t one = 1;
        ssize_t r = ::write(wakeFd, &one, sizeof(one));
        (void)r;  /* EAGAIN only when the counter is saturated: the fd is readable anyway */
    }

    void post(MediaPipe *pipe)
    {
        bool first;
        {
            std::lock_guard<std::mutex> g(listLock);
            first = pending.empty();
            pending.push_back(pipe);
        }
        if (first)
            wake();
    }

    /* The thread's loop (media_pipe_send.hpp: it works on pipes). */
    void run();

    void nextKey(unsigned char *key)
    {
        std::lock_guard<std::mutex> g(keyLock);
        if (keyPos >= sizeof(keys)) {
            /* The kernel CSPRNG, 1024 keys at a time (RFC 6455 5.3: unpredictable keys). */
            size_t got = 0;
            while (got < sizeof(keys)) {
                ssize_t n = getrandom(keys + got, sizeof(keys) - got, 0);
                if (n > 0)
                    got += (size_t)n;
            }
            keyPos = 0;
        }
        memcpy(key, keys + keyPos, 4);
        keyPos += 4;
    }
};
#endif

/* The process's sender thread; stopped and joined when dropped. */
class MediaSender {
public:
    MediaSender() PJSUA2_THROW(Error)
    {
        int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (fd < 0)
            PJSUA2_RAISE_ERROR2(PJ_RETURN_OS_ERROR(errno), "MediaSender()");
        core_ = std::make_shared<MediaSenderCore>();
        core_->wakeFd = fd;
        std::shared_ptr<MediaSenderCore> core = core_;
        thread_ = std::thread([core]() { core->run(); });
    }
    ~MediaSender()
    {
        core_->stopping.store(true);
        core_->wake();
        if (thread_.joinable())
            thread_.join();
    }

#ifndef SWIG
    std::shared_ptr<MediaSenderCore> core() const { return core_; }
private:
    std::shared_ptr<MediaSenderCore> core_;
    std::thread thread_;
#endif
};

} // namespace pj

#endif
