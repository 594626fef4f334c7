/*
 * The conference port of one call, feeding its MediaPipe (media_pipe.hpp) on the conference
 * clock thread. Compiled into the pjsua2 Python module with the other native/ headers.
 * GPL-2.0-or-later, like PJSIP.
 */
#ifndef BRIDGE_MEDIA_PORT_HPP
#define BRIDGE_MEDIA_PORT_HPP

#include <pjsua2/media.hpp>
#include "media_pipe.hpp"

#ifndef SWIG
#include <pjsua-lib/pjsua.h>
#ifndef THIS_FILE
#define THIS_FILE "media_port.hpp"
#endif
#endif

namespace pj {


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
