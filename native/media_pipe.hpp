/*
 * The bridge's media hand-off, compiled into the pjsua2 Python module (native/build-pjsua2.sh adds
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
 *   MediaSender      one per process: a thread that writes caller audio to the bots' sockets.
 *
 * Caller audio to the bot (optional, per call: MediaPipe.senderAttach): with 20 ms chunks every
 * call needs 50 `media` messages a second, and each one written from Python is a loop wake-up,
 * a pump, the JSON and the frame, and a send() made while holding the GIL, queued behind
 * everything else the loop does in that tick (bot audio, marks). Attached, the clock thread hands
 * a completed chunk to the sender thread, which builds the `media` message (the same bytes as
 * bridge/agentstream/codec.py's MediaEncoder), masks it as a client frame and writes it to a
 * duplicate of the socket's descriptor, all without Python. Every other frame for that socket
 * (the call's own events, websockets' pings and pongs) goes through the same pipe while attached,
 * so the frames on the wire are never interleaved and the sequence numbers, which the pipe
 * assigns as it queues each message, are in wire order. What the kernel does not take waits in
 * the pipe and goes when poll() says the socket is writable.
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
#include <sys/random.h>
#include <sys/socket.h>
#include <poll.h>
#include <fcntl.h>
#include <thread>
#include <unordered_set>
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
    void post(MediaPipe *pipe);
    void wake();
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

/* The process's sender thread (see the top of this file); stopped and joined when dropped. */
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
    ~MediaPipe()
    {
        if (wakeup_)
            wakeup_->forget(this);
        if (sender_) {
            /* Waits for the sender thread to finish with this pipe if it is working on it. */
            std::lock_guard<std::mutex> g(sender_->procLock);
            sender_->attached.erase(this);
        }
        if (fd_ >= 0)
            ::close(fd_);
    }

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
        unsigned long long start, end;
        wholeRangeLocked(frames ? frames : 1, start, end);
        PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)((end - start) * frame_));
        if (!out)
            return NULL;
        takeRangeLocked(start, end, PyBytes_AS_STRING(out));
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

    /* Post work and stamp the time (nextReadTime()) of the clock's next read of bot audio: after
     * a clear, the tick from which the dropped audio no longer plays. */
    void watchNextRead()
    {
        std::lock_guard<std::mutex> g(lock_);
        readWatch_ = true;
        readWatchAt_ = 0.0;
    }
    /* time.monotonic() of the read watchNextRead() asked for (0.0: not yet). */
    double nextReadTime() { std::lock_guard<std::mutex> g(lock_); return readWatchAt_; }

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

    /* ---- caller audio straight to the bot's socket (loop side) ---- */

    /* Hand this call's socket to the sender thread: from now on whole chunks of caller audio go
     * to the bot as `media` messages built here, numbered on from `seq` (chunk and samples count
     * on from `chunk` and `samples`; `rate` makes the timestamps). `infix` is the JSON between
     * the sequence number and the chunk number, stream id included (MediaEncoder's). Frames are
     * written to a duplicate of `fd`; media is dropped while more than `backlogLimit` bytes wait.
     * Returns false if the descriptor cannot be duplicated (nothing changes then). */
    bool senderAttach(MediaSender *sender, int fd, const string &infix, long long seq,
                      long long chunk, long long samples, unsigned rate, unsigned backlogLimit)
    {
        if (!sender || rate == 0)
            return false;
        std::shared_ptr<MediaSenderCore> core = sender->core();
        std::lock_guard<std::mutex> p(core->procLock);
        if (fd_ >= 0 || (sender_ && sender_ != core))
            return false;
        int dup = fcntl(fd, F_DUPFD_CLOEXEC, 0);
        if (dup < 0)
            return false;
        {
            std::lock_guard<std::mutex> o(outLock_);
            fd_ = dup;
            infix_ = infix;
            seq_ = seq;
            chunk_ = chunk;
            samples_ = samples;
            rate_ = rate;
            backlogLimit_ = backlogLimit;
            out_.clear();
            outOff_ = 0;
            sendErrno_ = 0;
            stalledAt_ = 0.0;
            backlogged.store(false);
        }
        bool due;
        {
            std::lock_guard<std::mutex> g(lock_);
            sender_ = core;
            senderOn_ = true;
            queuedSend.store(false);
            pcm_.resize((size_t)frame_ * ringFrames_);
            due = rxWritten_ - rxRead_ >= chunkFrames_;
        }
        core->attached.insert(this);
        if (due)
            postSend();
        return true;
    }

    /* Queue one whole, masked client frame (a websockets ping or pong) as bytes; returns
     * False when detached. */
    PyObject *senderWriteRaw(PyObject *frame)
    {
        Py_buffer view;
        if (PyObject_GetBuffer(frame, &view, PyBUF_SIMPLE) != 0)
            return NULL;
        bool taken;
        {
            std::lock_guard<std::mutex> o(outLock_);
            taken = fd_ >= 0;
            if (taken) {
                const char *src = (const char *)view.buf;
                out_.insert(out_.end(), src, src + view.len);
                flushLocked();
            }
        }
        PyBuffer_Release(&view);
        return PyBool_FromLong(taken);
    }

    /* Queue one text message made of head + its sequence number + tail (UTF-8 bytes; the number
     * is given here, so it is in wire order with the media); returns the number, 0 if detached. */
    PyObject *senderWriteEvent(PyObject *head, PyObject *tail)
    {
        Py_buffer h, t;
        if (PyObject_GetBuffer(head, &h, PyBUF_SIMPLE) != 0)
            return NULL;
        if (PyObject_GetBuffer(tail, &t, PyBUF_SIMPLE) != 0) {
            PyBuffer_Release(&h);
            return NULL;
        }
        long long seq = 0;
        {
            std::lock_guard<std::mutex> o(outLock_);
            if (fd_ >= 0) {
                seq = seq_++;
                text_.assign((const char *)h.buf, (size_t)h.len);
                appendNumber(text_, seq);
                text_.append((const char *)t.buf, (size_t)t.len);
                appendFrame(text_);
                flushLocked();
            }
        }
        PyBuffer_Release(&h);
        PyBuffer_Release(&t);
        return PyLong_FromLongLong(seq);
    }

    /* Take the socket back: (bytes not yet written, next sequence number, chunks sent, samples
     * sent). The sender thread is not working on this pipe once it returns. */
    PyObject *senderDetach()
    {
        std::string rest;
        long long seq = 0, chunk = 0, samples = 0;
        std::shared_ptr<MediaSenderCore> core;
        {
            std::lock_guard<std::mutex> g(lock_);
            core = sender_;
        }
        if (core) {
            std::lock_guard<std::mutex> p(core->procLock);
            core->attached.erase(this);
            {
                std::lock_guard<std::mutex> g(lock_);
                senderOn_ = false;
            }
            std::lock_guard<std::mutex> o(outLock_);
            if (outOff_ < out_.size())
                rest.assign(&out_[outOff_], out_.size() - outOff_);
            out_.clear();
            outOff_ = 0;
            if (fd_ >= 0)
                ::close(fd_);
            fd_ = -1;
            backlogged.store(false);
            seq = seq_;
            chunk = chunk_;
            samples = samples_;
        }
        return Py_BuildValue("(y#LLL)", rest.data(), (Py_ssize_t)rest.size(), seq, chunk, samples);
    }

    /* (messages written, their text bytes, media messages dropped, since when media has been
     * dropped without one written in between or 0.0, errno of a failed write or 0, bytes waiting,
     * chunks sent in all: the count it carries on from included). */
    PyObject *senderStatus()
    {
        std::lock_guard<std::mutex> o(outLock_);
        return Py_BuildValue("(KKKdiKL)", sentMessages_, sentBytes_, mediaDrops_, stalledAt_, sendErrno_,
                             (unsigned long long)(out_.size() - outOff_), chunk_);
    }

    /* Milliseconds from each chunk's completing tick to its message being written (oldest first),
     * since the last call; at most the last 256. */
    PyObject *senderLatencies()
    {
        std::lock_guard<std::mutex> o(outLock_);
        unsigned n = latCount_ < kLatSlots ? latCount_ : kLatSlots;
        PyObject *out = PyList_New(n);
        if (!out)
            return NULL;
        for (unsigned i = 0; i < n; ++i) {
            unsigned idx = (latCount_ - n + i) % kLatSlots;
            PyList_SET_ITEM(out, i, PyFloat_FromDouble(lat_[idx]));
        }
        latCount_ = 0;
        return out;
    }

    /* The sender thread's work for this pipe, done now (for tests). */
    void senderPoll()
    {
        std::shared_ptr<MediaSenderCore> core;
        {
            std::lock_guard<std::mutex> g(lock_);
            core = sender_;
        }
        if (!core)
            return;
        std::lock_guard<std::mutex> p(core->procLock);
        if (core->attached.count(this)) {
            queuedSend.store(false);
            senderRun();
        }
    }

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
        bool due, toSender;
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
            toSender = senderOn_;
        }
        if (due) {
            if (toSender)
                postSend();
            else
                postWork();
        }
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
            if (readWatch_) {
                readWatch_ = false;
                readWatchAt_ = pullAt_;
                post = true;
            }
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
    /* MediaSender's: set while in its list; and whether bytes wait for the socket to drain. */
    std::atomic<bool> queuedSend{false};
    std::atomic<bool> backlogged{false};

    /* Sender thread (the sender's procLock held): turn whole chunks into messages and write. */
    void senderRun()
    {
        unsigned long long start, end;
        double chunkAt;
        {
            std::lock_guard<std::mutex> g(lock_);
            if (!senderOn_)
                return;
            wholeRangeLocked(chunkFrames_, start, end);
            takeRangeLocked(start, end, pcm_.data());
            chunkAt = rxChunkAt_;
        }
        bool post = false;
        {
            std::lock_guard<std::mutex> o(outLock_);
            if (fd_ < 0)
                return;
            size_t chunkBytes = (size_t)chunkFrames_ * frame_;
            unsigned long long chunks = (end - start) / chunkFrames_;
            double now = bridge_monotonic();
            for (unsigned long long c = 0; c < chunks; ++c) {
                if (out_.size() - outOff_ > backlogLimit_)
                    flushLocked();  /* over the limit by what this run queued, or really stalled */
                if (out_.size() - outOff_ > backlogLimit_) {
                    /* The bot is not reading: drop caller audio, never the events. */
                    mediaDrops_ += 1;
                    if (stalledAt_ == 0.0)
                        stalledAt_ = now;
                    post = true;
                    continue;
                }
                stalledAt_ = 0.0;
                appendMedia(pcm_.data() + c * chunkBytes, chunkBytes);
                if (chunkAt > 0.0) {
                    lat_[latCount_ % kLatSlots] = (now - chunkAt) * 1000.0;
                    latCount_ += 1;
                }
            }
            flushLocked();
            if (latCount_ >= kLatPost || sendErrno_)
                post = true;
        }
        if (post)
            postWork();
    }

    /* Sender thread, procLock held: the descriptor to poll for writability, or -1. */
    int senderFd() const { return fd_; }
#endif

private:
#ifndef SWIG
    static const size_t kKeepBytes = 64 * 1024;

    void postWork()
    {
        if (wakeup_ && !closed_.load(std::memory_order_relaxed) && !queued.exchange(true))
            wakeup_->post(this);
    }

    /* lock_ held: the caller frames waiting, oldest first, cut to whole multiples of `whole`,
     * as [start, end). The slot being written next is never included: a reader that fell more
     * than a ring behind skips the oldest frames (counted in rxOverruns). */
    void wholeRangeLocked(unsigned long long whole, unsigned long long &start, unsigned long long &end)
    {
        start = rxRead_;
        end = rxWritten_;
        unsigned long long limit = ringFrames_ - 1;
        if (end - start > limit) {
            rxOverruns_ += end - start - limit;
            start = end - limit;
        }
        end = start + (end - start) / whole * whole;
    }

    /* lock_ held: copy frames [start, end) out of the ring to dst and mark them read. */
    void takeRangeLocked(unsigned long long start, unsigned long long end, char *dst)
    {
        for (unsigned long long i = start; i < end; ++i, dst += frame_)
            memcpy(dst, &rx_[(size_t)(i % ringFrames_) * frame_], frame_);
        rxRead_ = end;
    }

    /* sender_ is set before senderOn_ and never reset, so it is safe to use unlocked here. */
    void postSend()
    {
        if (sender_ && !queuedSend.exchange(true))
            sender_->post(this);
    }

    static void appendNumber(std::string &out, long long v)
    {
        char tmp[24];
        int n = snprintf(tmp, sizeof(tmp), "%lld", v);
        out.append(tmp, (size_t)n);
    }

    /* outLock_ held: one `media` message, byte for byte what MediaEncoder makes. */
    void appendMedia(const char *pcm, size_t n)
    {
        static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        long long seq = seq_++;
        chunk_ += 1;
        samples_ += (long long)(n / 2);
        text_.assign("{\"event\":\"media\",\"sequence_number\":\"");
        appendNumber(text_, seq);
        text_.append(infix_);
        appendNumber(text_, chunk_);
        text_.append("\",\"timestamp\":\"");
        appendNumber(text_, samples_ * 1000 / rate_);
        text_.append("\",\"payload\":\"");
        size_t at = text_.size();
        text_.resize(at + (n + 2) / 3 * 4);
        char *dst = &text_[at];
        const unsigned char *src = (const unsigned char *)pcm;
        size_t i = 0;
        for (; i + 3 <= n; i += 3, dst += 4) {
            unsigned v = (unsigned)src[i] << 16 | (unsigned)src[i + 1] << 8 | src[i + 2];
            dst[0] = b64[v >> 18];
            dst[1] = b64[(v >> 12) & 63];
            dst[2] = b64[(v >> 6) & 63];
            dst[3] = b64[v & 63];
        }
        if (i < n) {
            unsigned v = (unsigned)src[i] << 16 | (i + 1 < n ? (unsigned)src[i + 1] << 8 : 0u);
            dst[0] = b64[v >> 18];
            dst[1] = b64[(v >> 12) & 63];
            dst[2] = i + 1 < n ? b64[(v >> 6) & 63] : '=';
            dst[3] = '=';
        }
        text_.append("\"}}");
        appendFrame(text_);
    }

    /* outLock_ held: text as one final, masked text frame at the end of out_. */
    void appendFrame(const std::string &text)
    {
        size_t len = text.size();
        unsigned char head[14];
        size_t h = 0;
        head[h++] = 0x81;  /* FIN + text */
        if (len < 126) {
            head[h++] = (unsigned char)(0x80 | len);
        } else if (len < 65536) {
            head[h++] = 0x80 | 126;
            head[h++] = (unsigned char)(len >> 8);
            head[h++] = (unsigned char)len;
        } else {
            head[h++] = 0x80 | 127;
            for (int k = 7; k >= 0; --k)
                head[h++] = (unsigned char)((unsigned long long)len >> (8 * k));
        }
        unsigned char key[4];
        sender_->nextKey(key);
        memcpy(head + h, key, 4);
        h += 4;
        if (outOff_ && outOff_ == out_.size()) {
            out_.clear();
            outOff_ = 0;
        } else if (outOff_ > 65536 && outOff_ * 2 > out_.size()) {
            out_.erase(out_.begin(), out_.begin() + (long)outOff_);
            outOff_ = 0;
        }
        size_t at = out_.size();
        out_.resize(at + h + len);
        char *dst = &out_[at];
        memcpy(dst, head, h);
        dst += h;
        const char *src = text.data();
        for (size_t i = 0; i < len; ++i)
            dst[i] = (char)(src[i] ^ key[i & 3]);
        sentMessages_ += 1;
        sentBytes_ += len;
    }

    /* outLock_ held: write what the socket takes now; the rest waits for poll(). */
    void flushLocked()
    {
        while (outOff_ < out_.size()) {
            ssize_t n = ::send(fd_, &out_[outOff_], out_.size() - outOff_, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n > 0) {
                outOff_ += (size_t)n;
                continue;
            }
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                break;
            /* The connection is broken: the loop hears of it (senderStatus) and ends the call;
             * nothing more is queued for it. */
            sendErrno_ = n < 0 ? errno : EPIPE;
            out_.clear();
            outOff_ = 0;
            break;
        }
        if (outOff_ == out_.size()) {
            out_.clear();
            outOff_ = 0;
            backlogged.store(false);
        } else if (!backlogged.exchange(true)) {
            sender_->wake();  /* to poll this socket from now on */
        }
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
    bool readWatch_ = false;
    double readWatchAt_ = 0.0;
    /* caller audio to the bot's socket: lock_ guards senderOn_ and pcm_; sender_ is set once */
    static const unsigned kLatSlots = 256, kLatPost = 32;
    std::shared_ptr<MediaSenderCore> sender_;
    bool senderOn_ = false;
    std::vector<char> pcm_;
    /* outLock_ (after the sender's procLock; never with lock_) guards the rest */
    std::mutex outLock_;
    int fd_ = -1;
    std::string infix_, text_;
    std::vector<char> out_;
    size_t outOff_ = 0;
    size_t backlogLimit_ = 0;
    long long seq_ = 0, chunk_ = 0, samples_ = 0;
    unsigned rate_ = 8000;
    unsigned long long sentMessages_ = 0, sentBytes_ = 0, mediaDrops_ = 0;
    double stalledAt_ = 0.0;
    int sendErrno_ = 0;
    double lat_[kLatSlots];
    unsigned latCount_ = 0;
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

inline void MediaSenderCore::wake()
{
    uint64_t one = 1;
    ssize_t r = ::write(wakeFd, &one, sizeof(one));
    (void)r;  /* EAGAIN only when the counter is saturated: the fd is readable anyway */
}

inline void MediaSenderCore::post(MediaPipe *pipe)
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

/* The sender thread: wait for chunks (the wake eventfd) or for a backlogged socket to drain. */
inline void MediaSenderCore::run()
{
    std::vector<struct pollfd> fds;
    std::vector<MediaPipe *> polled, work;
    while (!stopping.load()) {
        fds.clear();
        polled.clear();
        fds.push_back({wakeFd, POLLIN, 0});
        {
            std::lock_guard<std::mutex> p(procLock);
            for (MediaPipe *pipe : attached) {
                if (pipe->backlogged.load() && pipe->senderFd() >= 0) {
                    fds.push_back({pipe->senderFd(), POLLOUT, 0});
                    polled.push_back(pipe);
                }
            }
        }
        int n = poll(fds.data(), (nfds_t)fds.size(), 1000);
        if (stopping.load())
            break;
        if (n <= 0)
            continue;
        if (fds[0].revents) {
            uint64_t count;
            ssize_t r = ::read(wakeFd, &count, sizeof(count));
            (void)r;
        }
        {
            std::lock_guard<std::mutex> g(listLock);
            work.swap(pending);
        }
        for (size_t i = 0; i < polled.size(); ++i)
            if (fds[i + 1].revents)
                work.push_back(polled[i]);
        for (MediaPipe *pipe : work) {
            std::lock_guard<std::mutex> p(procLock);
            if (!attached.count(pipe))
                continue;  /* detached or destroyed since it was posted */
            pipe->queuedSend.store(false);
            pipe->senderRun();
        }
        work.clear();
    }
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
