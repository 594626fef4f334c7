/*
 * The bridge's media hand-off, compiled into the pjsua2 Python module (scripts/build-pjsua2.sh adds
 * it to the SWIG interface). GPL-2.0-or-later, like PJSIP.
 *
 * Why it exists: with pj::AudioMediaPort every 20 ms frame of every call runs two Python callbacks
 * on the conference clock thread, and each SWIG accessor inside them drops and retakes the GIL.
 * When the asyncio thread is busy, the clock thread queues for the GIL (measured: a quarter of its
 * time at 150 calls), frames reach the bot late, and the callbacks cost ~0.1 % of a core per call.
 * Here the clock thread never touches Python: it copies caller audio into a ring, plays bot audio
 * out of a playout buffer, and wakes the loop through an eventfd only when a call has work (a whole
 * chunk of caller audio, a mark's audio played out, a latency probe passed).
 *
 *   MediaWakeup      one per process: the eventfd and the list of pipes with work.
 *   MediaPipe        one per call: caller-audio ring + bot-audio playout. No PJSIP calls, so it
 *                    may be created and destroyed on any thread (the asyncio loop holds it).
 *   PipeMediaPort    one per call: the conference port that feeds a MediaPipe. Created and
 *                    destroyed on a PJSIP-registered thread only.
 *
 * The playout state machine is a transcription of bridge/audio/playout.py (the executable
 * specification; tests/unit/test_media_pipe.py runs both on the same random operations).
 */
#ifndef BRIDGE_MEDIA_PIPE_HPP
#define BRIDGE_MEDIA_PIPE_HPP

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
#define THIS_FILE "media_pipe.hpp"
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
#endif

#ifndef SWIG
/* Shared by the MediaWakeup and its pipes, so whichever Python drops last (interpreter exit
 * clears modules in any order) frees it. */
struct MediaWakeupCore {
    int fd = -1;
    std::mutex lock;
    std::vector<MediaPipe *> pending;
    ~MediaWakeupCore() { if (fd >= 0) close(fd); }
    void post(MediaPipe *pipe);
    void forget(MediaPipe *pipe);
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

    /* Ids of the pipes that posted work since the last call (each once), oldest first. */
    IntVector take();

#ifndef SWIG
    std::shared_ptr<MediaWakeupCore> core() const { return core_; }
private:
    std::shared_ptr<MediaWakeupCore> core_;
#endif
};

class MediaPipe {
public:
    MediaPipe(int id, MediaWakeup *wakeup, unsigned frameBytes, unsigned ringFrames,
              unsigned chunkFrames, unsigned prebufferBytes, unsigned capBytes,
              unsigned underrunGapFrames)
    : id_(id), wakeup_(wakeup ? wakeup->core() : nullptr), frame_(frameBytes), ringFrames_(ringFrames ? ringFrames : 1),
      chunkFrames_(chunkFrames ? chunkFrames : 1),
      prebufferFrames_(frameBytes ? (prebufferBytes + frameBytes - 1) / frameBytes : 0),
      cap_(capBytes & ~1u), gap_(underrunGapFrames),
      rx_((size_t)frameBytes * (ringFrames ? ringFrames : 1))
    {
    }
    ~MediaPipe() { if (wakeup_) wakeup_->forget(this); }

    int getId() const { return id_; }
    unsigned getFrameBytes() const { return frame_; }

    /* ---- loop side ---- */

    /* Stop: the clock side does nothing more and posts no more work. */
    void close() { closed_.store(true); }

    /* Caller frames committed and not yet taken. */
    unsigned rxReady()
    {
        std::lock_guard<std::mutex> g(lock_);
        return (unsigned)(rxWritten_ - rxRead_);
    }

    /* Caller PCM committed since the last take, oldest first, as bytes, in whole multiples of
     * `frames` frames (all of it for 1); b"" when fewer wait. What is left over stays for the
     * next take: a loop that came a tick late takes one chunk and the next chunk is due on time
     * (taking it all would keep the remainder a chunk behind for the rest of the call). The slot
     * being written next is never returned: a loop that fell more than a ring behind loses the
     * oldest frames (counted in rxOverruns). */
    PyObject *rxTake(unsigned frames)
    {
        std::lock_guard<std::mutex> g(lock_);
        unsigned long long whole = frames ? frames : 1;
        unsigned long long start = rxRead_, end = rxWritten_;
        if (end - start < whole)
            return PyBytes_FromStringAndSize(NULL, 0);
        unsigned long long limit = ringFrames_ - 1;
        if (end - start > limit) {
            rxOverruns_ += end - start - limit;
            start = end - limit;
        }
        end = start + (end - start) / whole * whole;
        PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)((end - start) * frame_));
        if (!out)
            return NULL;
        char *dst = PyBytes_AS_STRING(out);
        for (unsigned long long i = start; i < end; ++i, dst += frame_)
            memcpy(dst, &rx_[(size_t)(i % ringFrames_) * frame_], frame_);
        rxRead_ = end;
        return out;
    }

    /* Queue bot PCM16LE; returns the bytes accepted (over the cap the excess is dropped).
     * Returns a Python object so that a bad argument raises its own TypeError (NULL return). */
    PyObject *write(PyObject *pcm)
    {
        Py_buffer view;
        if (PyObject_GetBuffer(pcm, &view, PyBUF_SIMPLE) != 0)
            return NULL;
        std::lock_guard<std::mutex> g(lock_);
        size_t n = (size_t)view.len;
        if (n & 1) {
            odd_ += 1;
            n -= 1;
        }
        size_t room = cap_ - size_;
        if (n > room) {
            dropped_ += n - room;
            n = room;
        }
        if (n > 0) {
            append((const char *)view.buf, n);
            if (dryAt_ >= 0) {
                /* First audio since playback ran dry: an interruption unless the bot closed the
                 * turn with a mark exactly where the audio ran out, or the pause was long. */
                if (reads_ - dryAt_ < (long long)gap_ && lastMarkPos_ != (long long)written_)
                    underruns_ += 1;
                dryAt_ = -1;
            }
            written_ += n;
        }
        PyBuffer_Release(&view);
        return PyLong_FromSize_t(n);
    }

    /* A mark after the audio written so far; returns its position (due once played >= it). */
    long long mark()
    {
        std::lock_guard<std::mutex> g(lock_);
        lastMarkPos_ = (long long)written_;
        return lastMarkPos_;
    }

    /* Barge-in: drop all unplayed audio (it counts as played); returns the bytes dropped. */
    long long clear()
    {
        std::lock_guard<std::mutex> g(lock_);
        size_t n = size_;
        cleared_ += n;
        played_ += n;
        head_ = size_ = 0;
        if (buf_.size() > kKeepBytes)
            std::vector<char>().swap(buf_);  /* a huge backlog's memory goes back at once */
        playing_ = false;
        wait_ = 0;
        dryAt_ = -1;
        probePos_ = -1;
        return (long long)n;
    }

    /* Post work when the read position reaches pos (-1: stop watching). */
    void watchMark(long long pos)
    {
        std::lock_guard<std::mutex> g(lock_);
        markPos_ = pos;
    }

    /* Post work and stamp the time (probeTime()) when the read position first passes pos. */
    void watchProbe(long long pos)
    {
        std::lock_guard<std::mutex> g(lock_);
        probePos_ = pos;
        probeAt_ = 0.0;
    }

    /* time.monotonic() of the tick that played past the probe position (0.0: not yet). */
    double probeTime() { std::lock_guard<std::mutex> g(lock_); return probeAt_; }
    /* time.monotonic() of the clock's last read of bot audio for this call (0.0: none yet): the
     * phase of this call's own tick, which the loop's latency probes need to the microsecond. */
    double pullTime() { std::lock_guard<std::mutex> g(lock_); return pullAt_; }
    /* time.monotonic() of the tick that completed the last chunk of caller audio. */
    double rxChunkTime() { std::lock_guard<std::mutex> g(lock_); return rxChunkAt_; }

    /* Counters (absolute, since creation). */
    long long rxWritten() { std::lock_guard<std::mutex> g(lock_); return (long long)rxWritten_; }
    long long rxRead() { std::lock_guard<std::mutex> g(lock_); return (long long)rxRead_; }
    long long rxOverruns() { std::lock_guard<std::mutex> g(lock_); return (long long)rxOverruns_; }
    long long written() { std::lock_guard<std::mutex> g(lock_); return (long long)written_; }
    long long played() { std::lock_guard<std::mutex> g(lock_); return (long long)played_; }
    long long clearedBytes() { std::lock_guard<std::mutex> g(lock_); return (long long)cleared_; }
    long long droppedBytes() { std::lock_guard<std::mutex> g(lock_); return (long long)dropped_; }
    long long oddBytes() { std::lock_guard<std::mutex> g(lock_); return (long long)odd_; }
    long long underruns() { std::lock_guard<std::mutex> g(lock_); return (long long)underruns_; }
    long long framesAudio() { std::lock_guard<std::mutex> g(lock_); return (long long)framesAudio_; }
    long long framesSilence() { std::lock_guard<std::mutex> g(lock_); return (long long)framesSilence_; }
    long long bufferedBytes() { std::lock_guard<std::mutex> g(lock_); return (long long)size_; }
    bool isPlaying() { std::lock_guard<std::mutex> g(lock_); return playing_; }

    /* ---- the clock side, callable from Python for tests (same code the conference runs) ---- */

    /* One caller frame in (anything but exactly frameBytes counts as a silent heartbeat). */
    PyObject *pushFrame(PyObject *pcm)
    {
        Py_buffer view;
        if (PyObject_GetBuffer(pcm, &view, PyBUF_SIMPLE) != 0)
            return NULL;
        putFrame((const char *)view.buf, (size_t)view.len);
        PyBuffer_Release(&view);
        Py_RETURN_NONE;
    }

    /* The next frame of bot audio as bytes, or None for silence. */
    PyObject *pullFrame()
    {
        std::vector<char> out(frame_);
        if (!getFrame(&out[0]))
            Py_RETURN_NONE;
        return PyBytes_FromStringAndSize(&out[0], (Py_ssize_t)frame_);
    }

#ifndef SWIG
    /* Clock thread: never allocates, never takes the GIL. */
    void putFrame(const char *pcm, size_t len)
    {
        if (closed_.load(std::memory_order_relaxed))
            return;
        bool due;
        {
            std::lock_guard<std::mutex> g(lock_);
            char *slot = &rx_[(size_t)(rxWritten_ % ringFrames_) * frame_];
            if (len == frame_)
                memcpy(slot, pcm, frame_);
            else
                memset(slot, 0, frame_);  /* the stream to the bot never pauses: silence */
            rxWritten_ += 1;
            due = rxWritten_ - rxRead_ >= chunkFrames_;
            if (due && rxWritten_ - rxRead_ == chunkFrames_)
                rxChunkAt_ = bridge_monotonic();
        }
        if (due)
            postWork();
    }

    /* Clock thread: fills out (frameBytes) and returns true, or returns false for silence. */
    bool getFrame(char *out)
    {
        if (closed_.load(std::memory_order_relaxed))
            return false;
        bool post = false, audio;
        {
            std::lock_guard<std::mutex> g(lock_);
            pullAt_ = bridge_monotonic();
            audio = readFrame(out);
            if (markPos_ >= 0 && (long long)played_ >= markPos_) {
                markPos_ = -1;
                post = true;
            }
            if (probePos_ >= 0 && (long long)played_ > probePos_) {
                probePos_ = -1;
                probeAt_ = bridge_monotonic();
                post = true;
            }
        }
        if (post)
            postWork();
        return audio;
    }

    /* MediaWakeup's bookkeeping: set while this pipe sits in the wakeup's list. */
    std::atomic<bool> queued{false};
#endif

private:
#ifndef SWIG
    static const size_t kKeepBytes = 64 * 1024;

    void postWork()
    {
        if (wakeup_ && !closed_.load(std::memory_order_relaxed) && !queued.exchange(true))
            wakeup_->post(this);
    }

    /* Loop thread, lock held: append n bytes to the playout ring, growing it (doubling, up to
     * the cap) off the clock thread. */
    void append(const char *src, size_t n)
    {
        if (size_ + n > buf_.size()) {
            size_t want = std::max<size_t>(buf_.size() ? buf_.size() : 4096, 4096);
            while (want < size_ + n)
                want *= 2;
            want = std::min(want, std::max<size_t>(cap_, size_ + n));
            std::vector<char> grown(want);
            copyOut(&grown[0], size_);
            buf_.swap(grown);
            head_ = 0;
        }
        size_t cap = buf_.size();
        size_t tail = (head_ + size_) % cap;
        size_t first = std::min(n, cap - tail);
        memcpy(&buf_[tail], src, first);
        if (n > first)
            memcpy(&buf_[0], src + first, n - first);
        size_ += n;
    }

    /* Copy the first n queued bytes (n <= size_) to dst without consuming them. */
    void copyOut(char *dst, size_t n)
    {
        if (n == 0)
            return;
        size_t cap = buf_.size();
        size_t first = std::min(n, cap - head_);
        memcpy(dst, &buf_[head_], first);
        if (n > first)
            memcpy(dst + first, &buf_[0], n - first);
    }

    void consume(size_t n)
    {
        size_ -= n;
        head_ = size_ ? (head_ + n) % buf_.size() : 0;
    }

    /* PlayoutBuffer.read_frame_into, lock held. */
    bool readFrame(char *out)
    {
        size_t size = frame_;
        reads_ += 1;
        size_t n = size_;
        if (!playing_) {
            if (n && wait_ >= prebufferFrames_) {
                playing_ = true;
                wait_ = 0;
            } else {
                if (n)
                    wait_ += 1;
                memset(out, 0, size);
                framesSilence_ += 1;
                return false;
            }
        }
        if (n >= size) {
            copyOut(out, size);
            consume(size);
            played_ += size;
            framesAudio_ += 1;
            return true;
        }
        /* Less than a frame left: play it, pad with silence, go back to pre-buffering. */
        playing_ = false;
        dryAt_ = reads_;
        if (n == 0) {
            memset(out, 0, size);
            framesSilence_ += 1;
            return false;
        }
        copyOut(out, n);
        memset(out + n, 0, size - n);
        consume(n);
        played_ += n;
        framesAudio_ += 1;
        return true;
    }

    const int id_;
    const std::shared_ptr<MediaWakeupCore> wakeup_;
    const unsigned frame_;
    const unsigned ringFrames_;
    const unsigned chunkFrames_;
    const unsigned prebufferFrames_;
    const size_t cap_;
    const unsigned gap_;
    std::atomic<bool> closed_{false};
    std::mutex lock_;
    /* caller audio */
    std::vector<char> rx_;
    unsigned long long rxWritten_ = 0, rxRead_ = 0, rxOverruns_ = 0;
    double rxChunkAt_ = 0.0;
    /* bot audio */
    std::vector<char> buf_;
    size_t head_ = 0, size_ = 0;
    bool playing_ = false;
    unsigned wait_ = 0;
    long long reads_ = 0, dryAt_ = -1, lastMarkPos_ = -1;
    unsigned long long written_ = 0, played_ = 0, dropped_ = 0, odd_ = 0, cleared_ = 0;
    unsigned long long underruns_ = 0, framesAudio_ = 0, framesSilence_ = 0;
    long long markPos_ = -1, probePos_ = -1;
    double probeAt_ = 0.0;
    double pullAt_ = 0.0;
#endif
};

#ifndef SWIG
inline void MediaWakeupCore::post(MediaPipe *pipe)
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

inline void MediaWakeupCore::forget(MediaPipe *pipe)
{
    std::lock_guard<std::mutex> g(lock);
    pending.erase(std::remove(pending.begin(), pending.end(), pipe), pending.end());
}
#endif

inline IntVector MediaWakeup::take()
{
    uint64_t count;
    MediaWakeupCore &core = *core_;
    ssize_t r = ::read(core.fd, &count, sizeof(count));  /* drain; EAGAIN when nothing was posted */
    (void)r;
    IntVector ids;
    std::lock_guard<std::mutex> g(core.lock);
    ids.reserve(core.pending.size());
    for (MediaPipe *pipe : core.pending) {
        /* Cleared before the loop looks at the pipe: work posted from now on queues it again. */
        pipe->queued.store(false);
        ids.push_back(pipe->getId());
    }
    core.pending.clear();
    return ids;
}

#ifndef SWIG
struct bridge_pipe_port_data {
    MediaPipe *pipe;  /* NULL once the PipeMediaPort is gone: the callbacks then do nothing */
    pj_pool_t *pool;
};

static pj_status_t bridge_pipe_get_frame(pjmedia_port *port, pjmedia_frame *frame)
{
    bridge_pipe_port_data *pdata = static_cast<bridge_pipe_port_data *>(port->port_data.pdata);
    pj_grp_lock_acquire(port->grp_lock);
    MediaPipe *pipe = pdata->pipe;
    if (pipe && frame->size >= pipe->getFrameBytes() && pipe->getFrame((char *)frame->buf)) {
        frame->type = PJMEDIA_FRAME_TYPE_AUDIO;
        frame->size = pipe->getFrameBytes();
    } else {
        /* An empty frame, which the stream encodes as silence: RTP never pauses. */
        frame->type = PJMEDIA_FRAME_TYPE_NONE;
        frame->size = 0;
    }
    pj_grp_lock_release(port->grp_lock);
    return PJ_SUCCESS;
}

static pj_status_t bridge_pipe_put_frame(pjmedia_port *port, pjmedia_frame *frame)
{
    bridge_pipe_port_data *pdata = static_cast<bridge_pipe_port_data *>(port->port_data.pdata);
    pj_grp_lock_acquire(port->grp_lock);
    MediaPipe *pipe = pdata->pipe;
    if (pipe) {
        size_t len = frame->type == PJMEDIA_FRAME_TYPE_AUDIO ? frame->size : 0;
        pipe->putFrame((const char *)frame->buf, len);
    }
    pj_grp_lock_release(port->grp_lock);
    return PJ_SUCCESS;
}

static pj_status_t bridge_pipe_on_destroy(pjmedia_port *port)
{
    bridge_pipe_port_data *pdata = static_cast<bridge_pipe_port_data *>(port->port_data.pdata);
    if (pdata->pool)
        pj_pool_release(pdata->pool);
    return PJ_SUCCESS;
}
#endif

/* The conference port of one call (the same shape as pj::AudioMediaPort, minus Python). The
 * MediaPipe must outlive it: the engine drops the port first, then the pipe. */
class PipeMediaPort : public AudioMedia {
public:
    PipeMediaPort() : pool_(NULL), port_(NULL) {}

    virtual ~PipeMediaPort()
    {
        PJSUA2_CATCH_IGNORE(unregisterMediaPort());
        if (port_) {
            bridge_pipe_port_data *pdata =
                static_cast<bridge_pipe_port_data *>(port_->port_data.pdata);
            /* Unregistering is asynchronous: from here on the callbacks must not see the pipe. */
            pj_grp_lock_acquire(port_->grp_lock);
            pdata->pipe = NULL;
            pj_grp_lock_release(port_->grp_lock);
            pjmedia_port_destroy(port_);  /* the pool goes in on_destroy */
        }
    }

    /* Register a 20 ms mono L16 port at clockRate with the conference, feeding pipe. */
    void createPort(const string &name, unsigned clockRate, MediaPipe *pipe) PJSUA2_THROW(Error)
    {
        if (pool_)
            PJSUA2_RAISE_ERROR(PJ_EEXISTS);
        if (!pipe || pipe->getFrameBytes() != clockRate / 50 * 2)
            PJSUA2_RAISE_ERROR(PJ_EINVAL);
        pool_ = pjsua_pool_create("pipe%p", 512, 512);
        if (!pool_)
            PJSUA2_RAISE_ERROR(PJ_ENOMEM);
        port_ = PJ_POOL_ZALLOC_T(pool_, pjmedia_port);
        pj_str_t name_;
        pj_strdup2_with_null(pool_, &name_, name.c_str());
        pjmedia_port_info_init(&port_->info, &name_, PJMEDIA_SIG_CLASS_APP('B', 'M', 'P'),
                               clockRate, 1, 16, clockRate / 50);
        bridge_pipe_port_data *pdata = PJ_POOL_ZALLOC_T(pool_, bridge_pipe_port_data);
        pdata->pipe = pipe;
        pdata->pool = pool_;
        port_->port_data.pdata = pdata;
        port_->put_frame = &bridge_pipe_put_frame;
        port_->get_frame = &bridge_pipe_get_frame;
        port_->on_destroy = &bridge_pipe_on_destroy;
        pj_status_t status = pjmedia_port_init_grp_lock(port_, pool_, NULL);
        if (status != PJ_SUCCESS)
            PJSUA2_RAISE_ERROR(status);
        registerMediaPort2(port_, pool_);
    }

private:
    pj_pool_t *pool_;
    pjmedia_port *port_;
};

} // namespace pj

#endif
