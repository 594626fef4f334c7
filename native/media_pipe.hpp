/*
 * The bridge's media hand-off, compiled into the pjsua2 Python module (native/build-pjsua2.sh adds
 * every native/ header to the SWIG interface). GPL-2.0-or-later, like PJSIP.
 *
 * Why it exists: with pj::AudioMediaPort every 20 ms frame of every call runs two Python callbacks
 * on the conference clock thread, and each SWIG accessor inside them drops and retakes the GIL.
 * When the asyncio thread is busy, the clock thread queues for the GIL (measured: a quarter of its
 * time at 150 calls), frames reach the bot late, and the callbacks cost ~0.1 % of a core per call.
 * Here the clock thread never touches Python: it copies caller audio into a ring, plays bot audio
 * out of a playout buffer, and wakes the loop through an eventfd only when a call has work (a whole
 * chunk of caller audio, a mark's audio played out, a latency probe passed).
 *
 *   MediaWakeup      (media_wakeup.hpp) one per process: the eventfd and the pipes with work.
 *   MediaPipe        (here) one per call: caller-audio ring + bot-audio playout. No PJSIP calls,
 *                    so it may be created and destroyed on any thread (the asyncio loop holds it).
 *   PipeMediaPort    (media_port.hpp) one per call: the conference port that feeds a MediaPipe.
 *                    Created and destroyed on a PJSIP-registered thread only.
 *   MediaSender      (media_sender.hpp) one per process: a thread that writes caller audio to the
 *                    bots' sockets; the pipe's side of it is in media_pipe_send.hpp.
 *   SendTemplate     (media_template.hpp) a bot dialect's message: bytes around counter slots.
 *
 * Caller audio to the bot (optional, per call: MediaPipe.senderAttach): with 20 ms chunks every
 * call needs 50 media messages a second, and each one written from Python is a loop wake-up,
 * a pump, the JSON and the frame, and a send() made while holding the GIL, queued behind
 * everything else the loop does in that tick (bot audio, marks). Attached, the clock thread hands
 * a completed chunk to the sender thread, which renders the message from the dialect's template
 * (the same bytes as the dialect's Python encoder; tests hold it to that), masks it as a client
 * frame and writes it to a duplicate of the socket's descriptor, all without Python. Every other
 * frame for that socket (the call's own events, websockets' pings and pongs) goes through the
 * same pipe while attached, so the frames on the wire are never interleaved and the sequence
 * numbers, which the pipe assigns as it queues each message, are in wire order. What the kernel
 * does not take waits in the pipe and goes when poll() says the socket is writable.
 *
 * The playout state machine is a transcription of bridge/audio/playout.py (the executable
 * specification; tests/unit/test_media_pipe.py runs both on the same random operations).
 */
#ifndef BRIDGE_MEDIA_PIPE_HPP
#define BRIDGE_MEDIA_PIPE_HPP

#include <pjsua2/media.hpp>
#include <vector>
#include <string>
#include "media_wakeup.hpp"
#include "media_sender.hpp"
#include "media_template.hpp"

#ifndef SWIG
#include <Python.h>
#include <atomic>
#include <mutex>
#include <memory>
#include <algorithm>
#include <cstring>
#include <pjsua-lib/pjsua.h>
#ifndef THIS_FILE
#define THIS_FILE "media_pipe.hpp"
#endif
#endif

namespace pj {

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

    /* ---- caller audio straight to the bot's socket (loop side; media_pipe_send.hpp) ---- */

    /* Hand this call's socket to the sender thread: from now on whole chunks of caller audio go
     * to the bot as messages rendered from `tmpl` (a media template, media_template.hpp: bytes),
     * numbered on from `seq` (chunk and samples count on from `chunk` and `samples`; `rate`
     * makes the timestamps). Frames are written to a duplicate of `fd`; media is dropped while
     * more than `backlogLimit` bytes wait. Returns False if the descriptor cannot be duplicated
     * (nothing changes then); raises ValueError for a template that is not a media template. */
    PyObject *senderAttach(MediaSender *sender, int fd, PyObject *tmpl, long long seq,
                           long long chunk, long long samples, unsigned rate, unsigned backlogLimit);

    /* Queue one whole, masked client frame (a websockets ping or pong) as bytes; returns
     * False when detached. */
    PyObject *senderWriteRaw(PyObject *frame);

    /* Queue one text message rendered from `tmpl` (an event template: no payload slot) with the
     * next sequence number, given here so that it is in wire order with the media (the other
     * counters are the stream's so far); returns the number, 0 if detached. */
    PyObject *senderWriteEvent(PyObject *tmpl);

    /* Take the socket back: (bytes not yet written, next sequence number, chunks sent, samples
     * sent). The sender thread is not working on this pipe once it returns. */
    PyObject *senderDetach();

    /* (messages written, their text bytes, media messages dropped, since when media has been
     * dropped without one written in between or 0.0, errno of a failed write or 0, bytes waiting,
     * chunks sent in all: the count it carries on from included). */
    PyObject *senderStatus();

    /* Milliseconds from each chunk's completing tick to its message being written (oldest first),
     * since the last call; at most the last 256. */
    PyObject *senderLatencies();

    /* The sender thread's work for this pipe, done now (for tests). */
    void senderPoll();

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
    void senderRun();

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

    /* outLock_ held: one media message of n bytes of PCM16LE, from the stream's template. */
    void appendMedia(const char *pcm, size_t n);
    /* outLock_ held: text as one final, masked text frame at the end of out_. */
    void appendFrame(const std::string &text);
    /* outLock_ held: write what the socket takes now; the rest waits for poll(). */
    void flushLocked();

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
    SendTemplate media_;  /* the stream's media message */
    std::string text_;
    std::vector<unsigned char> law_;  /* a mu-law payload before its base64 */
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

} // namespace pj

#endif
