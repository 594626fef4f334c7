/* Server-size limits for the bridge (all #ifndef-guarded in PJSIP).
 * PJSIP's defaults are 4 calls per process and 64 socket handles, which make a demo, not a server. */
#define PJSUA_MAX_CALLS            1024
#define PJSUA_MAX_ACC              32
#define PJ_IOQUEUE_MAX_HANDLES     8192
#define PJSIP_MAX_TSX_COUNT        16384
#define PJSIP_MAX_DIALOG_COUNT     16384
#define PJSUA_MAX_PLAYERS          32
#define PJSUA_MAX_RECORDERS        32
#define PJSUA_MAX_CONF_PORTS       (PJSUA_MAX_CALLS * 3)
#define PJSUA_HAS_SIPREC           1

/* RTP latching (the profile's media.rtp_latching): how many packets in a row from a new source
 * move a stream's remote address there. Variables, not constants, so the bridge sets them at
 * start-up; they are defined in the pjsua2 module (native/sip_guard.hpp). */
#ifdef __cplusplus
extern "C" {
#endif
extern unsigned bridge_rtp_nat_probation_cnt;
extern unsigned bridge_rtcp_nat_probation_cnt;
#ifdef __cplusplus
}
#endif
#define PJMEDIA_RTP_NAT_PROBATION_CNT   bridge_rtp_nat_probation_cnt
#define PJMEDIA_RTCP_NAT_PROBATION_CNT  bridge_rtcp_nat_probation_cnt

/* A stream's first read by the conference would reset its jitter buffer ("soft start"), dropping
 * the packets that arrived between the answer and the next 20 ms tick: the first words of a callee
 * who speaks at once (an outbound call's "hello") or of a caller whose RTP beats the tick. The
 * jitter buffer's own prefetch already covers what soft start is for. */
#define PJMEDIA_STREAM_SOFT_START       0
