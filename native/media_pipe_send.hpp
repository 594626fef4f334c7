/*
 * MediaPipe's side of the native sender (media_sender.hpp): attaching a call's socket, the
 * messages rendered from the dialect's template (media_template.hpp), the masked frames and their
 * writes, and the sender thread's loop. Out of the class's body (media_pipe.hpp) only to keep
 * each file short; compiled into the pjsua2 Python module with it. GPL-2.0-or-later, like PJSIP.
 */
#ifndef BRIDGE_MEDIA_PIPE_SEND_HPP
#define BRIDGE_MEDIA_PIPE_SEND_HPP

#include "media_pipe.hpp"

#ifndef SWIG
#include <Python.h>
#include <cerrno>
#include <cstring>
#include <unistd.h>
#include <sys/socket.h>
#include <poll.h>
#include <fcntl.h>

namespace pj {

inline PyObject *MediaPipe::senderAttach(MediaSender *sender, int fd, PyObject *tmpl, long long seq,
                                          long long chunk, long long samples, unsigned rate,
                                          unsigned backlogLimit)
{
    Py_buffer view;
    if (PyObject_GetBuffer(tmpl, &view, PyBUF_SIMPLE) != 0)
        return NULL;
    /* Read here, off every lock: the sender thread only ever sees a whole template. */
    SendTemplate media;
    bool valid = media.parse((const char *)view.buf, (size_t)view.len, true);
    PyBuffer_Release(&view);
    if (!valid) {
        PyErr_SetString(PyExc_ValueError, "senderAttach: not a media template (media_template.hpp)");
        return NULL;
    }
    if (!sender || rate == 0)
        Py_RETURN_FALSE;
    std::shared_ptr<MediaSenderCore> core = sender->core();
    std::lock_guard<std::mutex> p(core->procLock);
    if (fd_ >= 0 || (sender_ && sender_ != core))
        Py_RETURN_FALSE;
    int dup = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dup < 0)
        Py_RETURN_FALSE;
    {
        std::lock_guard<std::mutex> o(outLock_);
        fd_ = dup;
        media_ = media;
        law_.resize((size_t)frame_ * chunkFrames_ / 2 + 1);  /* a mu-law chunk: no allocation later */
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
    Py_RETURN_TRUE;
}

inline PyObject *MediaPipe::senderWriteRaw(PyObject *frame)
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

inline PyObject *MediaPipe::senderWriteEvent(PyObject *tmpl)
{
    Py_buffer view;
    if (PyObject_GetBuffer(tmpl, &view, PyBUF_SIMPLE) != 0)
        return NULL;
    /* Events are a few a second at most: a template of their own, read on the loop's thread. */
    SendTemplate event;
    bool valid = event.parse((const char *)view.buf, (size_t)view.len, false);
    PyBuffer_Release(&view);
    if (!valid) {
        PyErr_SetString(PyExc_ValueError, "senderWriteEvent: not an event template (media_template.hpp)");
        return NULL;
    }
    long long seq = 0;
    {
        std::lock_guard<std::mutex> o(outLock_);
        if (fd_ >= 0) {
            seq = seq_++;
            event.render(text_, SendCounters{seq, chunk_, samples_, rate_}, NULL, 0, NULL);
            appendFrame(text_);
            flushLocked();
        }
    }
    return PyLong_FromLongLong(seq);
}

inline PyObject *MediaPipe::senderDetach()
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

inline PyObject *MediaPipe::senderStatus()
{
    std::lock_guard<std::mutex> o(outLock_);
    return Py_BuildValue("(KKKdiKL)", sentMessages_, sentBytes_, mediaDrops_, stalledAt_, sendErrno_,
                         (unsigned long long)(out_.size() - outOff_), chunk_);
}

inline PyObject *MediaPipe::senderLatencies()
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

inline void MediaPipe::senderPoll()
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

inline void MediaPipe::senderRun()
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

inline void MediaPipe::appendMedia(const char *pcm, size_t n)
{
    long long seq = seq_++;
    chunk_ += 1;
    samples_ += (long long)(n / 2);
    media_.render(text_, SendCounters{seq, chunk_, samples_, rate_}, pcm, n, law_.data());
    appendFrame(text_);
}

inline void MediaPipe::appendFrame(const std::string &text)
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

inline void MediaPipe::flushLocked()
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

} // namespace pj
#endif

#endif
