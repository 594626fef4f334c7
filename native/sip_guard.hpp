/* The bridge's SIP guard: two small PJSIP modules that pjsua2 does not offer from Python.
 *
 * - The checker runs before the transaction layer (priority 15) on every request and refuses,
 *   with the answer RFC 3261 gives, what no later layer should see: framing that cannot be
 *   trusted (several Content-Length values, a Content-Length longer than the datagram's body, a
 *   CSeq method that is not the request's, several From/To/Call-ID/CSeq/Max-Forwards: 400; an ACK
 *   so framed is dropped; a TCP or TLS connection that carried such a message, or bytes PJSIP
 *   could not frame, is closed), a Request-URI scheme other than sip/sips/tel (416), a Require
 *   option tag the endpoint does not support (420 with Unsupported), and for a new INVITE: an
 *   Accept without application/sdp (406), an IPv6 Contact on an IPv4-only bridge and an SDP offer
 *   with no audio stream the bridge can take (DTLS or other transports, IPv6 without IPv6 media:
 *   488), which keeps them from pjsua's failure paths (500s; see also build-pjsua2.sh).
 * - The fallback runs after every other module (priority 96) and answers what none of them
 *   handled, which PJSIP otherwise drops in silence (the peer then retransmits for 32 s):
 *   481 for requests that belong to a dialog or transaction the bridge does not have (a To tag,
 *   or BYE/CANCEL/INFO/UPDATE/REFER/PRACK/NOTIFY), 405 for methods SIP defines that the bridge
 *   does not serve, 501 for unknown methods; both with the endpoint's Allow header.
 * - PJSIP's drop callback answers requests PJSIP could not parse from their raw text (400, 505).
 *
 * All run on the thread that polls PJSIP (the bridge's sip thread) and never call Python.
 * `bridge_rtp_nat_probation_cnt` and `bridge_rtcp_nat_probation_cnt`, read by PJMEDIA through the
 * config_site.h macros: how many packets in a row from a new source move a stream there.
 */
#ifndef BRIDGE_SIP_GUARD_HPP
#define BRIDGE_SIP_GUARD_HPP

#ifndef SWIG
#include <pjsua-lib/pjsua.h>
#include <pjmedia/sdp.h>
#include <string>
#include <vector>
#include <cstring>
#include <cctype>
#include <cstdlib>

extern "C" {
unsigned bridge_rtp_nat_probation_cnt = 0xFFFFFFFFu;
unsigned bridge_rtcp_nat_probation_cnt = 0xFFFFFFFFu;
}

#endif /* SWIG */

namespace pj {

#ifndef SWIG
/* Counters, in the order of SipGuard::counts(). */
enum SipGuardCount {
    GUARD_BAD_FRAMING = 0,      /* 400 (or an ACK dropped) */
    GUARD_BAD_SCHEME,           /* 416 */
    GUARD_BAD_REQUIRE,          /* 420 */
    GUARD_NOT_ACCEPTABLE,       /* 406 */
    GUARD_BAD_MEDIA,            /* 488 */
    GUARD_NO_DIALOG,            /* 481 */
    GUARD_NOT_ALLOWED,          /* 405 */
    GUARD_NOT_IMPLEMENTED,      /* 501 */
    GUARD_REPLACES_FORBIDDEN,   /* 403: an INVITE with Replaces from outside sip.allow_from */
    GUARD_UNPARSEABLE,          /* 400 (505 for another SIP version) to a request PJSIP could not parse */
    GUARD_UNREACHABLE_CONTACT,  /* 488: a new INVITE whose Contact is IPv6 on an IPv4-only bridge */
    GUARD_UNSUPPORTED_BODY,     /* 415: a new INVITE with a body neither SDP nor multipart */
    GUARD_COUNT_MAX
};

struct SipGuardNetwork {
    int family;                 /* PJ_AF_INET or PJ_AF_INET6 */
    unsigned char bytes[16];
    unsigned prefix;
};

struct SipGuardState {
    pjsip_module checker;
    pjsip_module fallback;
    bool installed = false;
    bool ipv6_media = false;    /* the bridge listens on IPv6: IPv6 media and Contacts are usable */
    std::vector<SipGuardNetwork> replaces_sources;  /* sip.allow_from, resolved */
    unsigned long counts[GUARD_COUNT_MAX] = {0};
};

static inline SipGuardState &sip_guard_state()
{
    static SipGuardState state;
    return state;
}

static inline bool sip_guard_method_is(const pjsip_method *m, const char *name)
{
    size_t n = strlen(name);
    return (size_t)m->name.slen == n && pj_strnicmp2(&m->name, name, n) == 0;
}

static inline void sip_guard_answer(pjsip_rx_data *rdata, int code, const pjsip_hdr *extra, bool stateful)
{
    pjsip_hdr list;
    pj_list_init(&list);
    if (extra)
        pj_list_push_back(&list, pjsip_hdr_clone(rdata->tp_info.pool, extra));
    pjsip_endpoint *endpt = pjsua_get_pjsip_endpt();
    if (stateful)
        pjsip_endpt_respond(endpt, NULL, rdata, code, NULL, &list, NULL, NULL);
    else
        pjsip_endpt_respond_stateless(endpt, rdata, code, NULL, &list, NULL);
}

static inline const pjsip_hdr *sip_guard_allow()
{
    return pjsip_endpt_get_capability(pjsua_get_pjsip_endpt(), PJSIP_H_ALLOW, NULL);
}

/* Bytes after the header block of the received message. */
static inline long sip_guard_body_bytes(const pjsip_rx_data *rdata)
{
    std::string buf(rdata->msg_info.msg_buf, (size_t)rdata->msg_info.len);
    size_t end = buf.find("\r\n\r\n");
    if (end != std::string::npos)
        return (long)(buf.size() - end - 4);
    end = buf.find("\n\n");
    return end == std::string::npos ? 0 : (long)(buf.size() - end - 2);
}

/* RFC 3261 25.1: Request-Line = Method SP Request-URI SP SIP-Version CRLF, single spaces (RFC 4475
 * `lwsstart`, `trws`); and an IPv6 reference in a sip/sips Request-URI must be an IPv6 address
 * (RFC 5118 `ipv6-bug-abnf-3-colons`). PJSIP reads both leniently. */
static inline bool sip_guard_request_line_ok(const pjsip_rx_data *rdata)
{
    const char *buf = rdata->msg_info.msg_buf;
    int spaces = 0;
    for (int i = 0; i < rdata->msg_info.len && buf[i] != '\r' && buf[i] != '\n'; ++i) {
        if (buf[i] == '\t' || (buf[i] == ' ' && (i == 0 || buf[i - 1] == ' ')))
            return false;
        spaces += buf[i] == ' ';
    }
    const pjsip_uri *uri = (const pjsip_uri *)pjsip_uri_get_uri(rdata->msg_info.msg->line.req.uri);
    if (spaces != 2 || (!PJSIP_URI_SCHEME_IS_SIP(uri) && !PJSIP_URI_SCHEME_IS_SIPS(uri)))
        return spaces == 2;
    const pj_str_t *host = &((const pjsip_sip_uri *)uri)->host;
    pj_in6_addr addr;
    return host->slen == 0 || !memchr(host->ptr, ':', (size_t)host->slen) ||
           pj_inet_pton(pj_AF_INET6(), host, &addr) == PJ_SUCCESS;
}

static inline bool sip_guard_framing_ok(const pjsip_rx_data *rdata)
{
    const pjsip_msg *msg = rdata->msg_info.msg;
    /* Several values of a single-valued header (RFC 4475 `mcl01`, `multi01`): which one the peer
     * means cannot be known, and PJSIP would silently take the first. */
    static const pjsip_hdr_e single[] = {PJSIP_H_CONTENT_LENGTH, PJSIP_H_FROM, PJSIP_H_TO,
                                         PJSIP_H_CALL_ID, PJSIP_H_CSEQ, PJSIP_H_MAX_FORWARDS};
    for (pjsip_hdr_e type : single) {
        const pjsip_hdr *first = (const pjsip_hdr *)pjsip_msg_find_hdr(msg, type, NULL);
        if (first && pjsip_msg_find_hdr(msg, type, first->next) != NULL)
            return false;
    }
    if (rdata->msg_info.cseq &&
        pjsip_method_cmp(&rdata->msg_info.cseq->method, &msg->line.req.method) != 0) {
        /* An ACK whose CSeq says INVITE is wrong (RFC 3261 17.1.1.3) but common, and PJSIP
         * matches it to its INVITE all the same: dropping it would end the call at Timer H. */
        bool sloppy_ack = msg->line.req.method.id == PJSIP_ACK_METHOD &&
                          rdata->msg_info.cseq->method.id == PJSIP_INVITE_METHOD;
        if (!sloppy_ack)
            return false;
    }
    bool datagram = (rdata->tp_info.transport->flag & PJSIP_TRANSPORT_RELIABLE) == 0;
    if (datagram && rdata->msg_info.clen && rdata->msg_info.clen->len > sip_guard_body_bytes(rdata))
        return false;
    return true;
}

static inline bool sip_guard_scheme_ok(const pjsip_rx_data *rdata)
{
    const pjsip_uri *uri = rdata->msg_info.msg->line.req.uri;
    if (PJSIP_URI_SCHEME_IS_SIP(uri) || PJSIP_URI_SCHEME_IS_SIPS(uri))
        return true;
    const pj_str_t *scheme = pjsip_uri_get_scheme(uri);
    return scheme && pj_stricmp2(scheme, "tel") == 0;
}

/* Option tags in Require that the endpoint does not support, as an Unsupported header (NULL: none). */
static inline pjsip_hdr *sip_guard_unsupported(pjsip_rx_data *rdata)
{
    const pjsip_msg *msg = rdata->msg_info.msg;
    const pjsip_generic_array_hdr *supported = (const pjsip_generic_array_hdr *)
        pjsip_endpt_get_capability(pjsua_get_pjsip_endpt(), PJSIP_H_SUPPORTED, NULL);
    pjsip_unsupported_hdr *out = NULL;
    for (const pjsip_hdr *h = msg->hdr.next; h != &msg->hdr; h = h->next) {
        if (h->type != PJSIP_H_REQUIRE)
            continue;
        const pjsip_generic_array_hdr *req = (const pjsip_generic_array_hdr *)h;
        for (unsigned i = 0; i < req->count; ++i) {
            bool known = false;
            for (unsigned j = 0; supported && j < supported->count; ++j) {
                if (pj_stricmp(&req->values[i], &supported->values[j]) == 0) {
                    known = true;
                    break;
                }
            }
            if (known)
                continue;
            if (!out)
                out = pjsip_unsupported_hdr_create(rdata->tp_info.pool);
            if (out->count < PJSIP_GENERIC_ARRAY_MAX_COUNT)
                out->values[out->count++] = req->values[i];
        }
    }
    return (pjsip_hdr *)out;
}

static inline bool sip_guard_accepts_sdp(const pjsip_rx_data *rdata)
{
    const pjsip_msg *msg = rdata->msg_info.msg;
    bool any = false;
    for (const pjsip_hdr *h = msg->hdr.next; h != &msg->hdr; h = h->next) {
        if (h->type != PJSIP_H_ACCEPT)
            continue;
        const pjsip_generic_array_hdr *accept = (const pjsip_generic_array_hdr *)h;
        for (unsigned i = 0; i < accept->count; ++i) {
            any = true;
            std::string v(accept->values[i].ptr, accept->values[i].slen);
            for (char &c : v)
                c = (char)tolower((unsigned char)c);
            std::string type = v.substr(0, v.find(';'));
            while (!type.empty() && (type.back() == ' ' || type.back() == '\t'))
                type.pop_back();
            if (type == "application/sdp" || type == "application/*" || type == "*/*")
                return true;
        }
    }
    return !any;  /* no Accept (or an empty one): application/sdp is assumed (RFC 3261 20.1) */
}

/* For a new INVITE with an SDP body: is there an audio stream pjsua can take? Bodies that are
 * not SDP, or that do not parse, are left to PJSIP's own checks. */
static inline bool sip_guard_media_ok(pjsip_rx_data *rdata)
{
    const pjsip_msg_body *body = rdata->msg_info.msg->body;
    if (!body || body->len == 0 || pj_stricmp2(&body->content_type.type, "application") != 0 ||
        pj_stricmp2(&body->content_type.subtype, "sdp") != 0)
        return true;
    pjmedia_sdp_session *sdp = NULL;
    if (pjmedia_sdp_parse(rdata->tp_info.pool, (char *)body->data, body->len, &sdp) != PJ_SUCCESS)
        return true;
    bool audio_offered = false;
    for (unsigned i = 0; i < sdp->media_count; ++i) {
        const pjmedia_sdp_media *m = sdp->media[i];
        if (pj_stricmp2(&m->desc.media, "audio") != 0 || m->desc.port == 0)
            continue;
        audio_offered = true;
        const pj_str_t *tp = &m->desc.transport;
        bool rtp = pj_stricmp2(tp, "RTP/AVP") == 0 || pj_stricmp2(tp, "RTP/AVPF") == 0 ||
                   pj_stricmp2(tp, "RTP/SAVP") == 0 || pj_stricmp2(tp, "RTP/SAVPF") == 0;
        const pjmedia_sdp_conn *conn = m->conn ? m->conn : sdp->conn;
        bool ip6 = conn && pj_stricmp2(&conn->addr_type, "IP6") == 0;
        if (rtp && (!ip6 || sip_guard_state().ipv6_media))
            return true;
    }
    return !audio_offered;  /* no audio at all: PJSIP answers that itself */
}

/* For a new INVITE: is the address the dialog's requests would go to (the first Record-Route, else
 * the Contact) an IPv6 literal, on a bridge that has no IPv6 transport? pjsua cannot make a
 * Contact for such a dialog and answered 500 (RFC 5118 `mult-ip-in-sdp`, with a valid SDP). */
static inline bool sip_guard_target_unreachable(const pjsip_rx_data *rdata)
{
    const pjsip_msg *msg = rdata->msg_info.msg;
    const pjsip_rr_hdr *rr = (const pjsip_rr_hdr *)pjsip_msg_find_hdr(msg, PJSIP_H_RECORD_ROUTE, NULL);
    const pjsip_contact_hdr *contact = (const pjsip_contact_hdr *)pjsip_msg_find_hdr(msg, PJSIP_H_CONTACT, NULL);
    const pjsip_uri *uri = rr ? rr->name_addr.uri : (contact && !contact->star) ? contact->uri : NULL;
    uri = uri ? (const pjsip_uri *)pjsip_uri_get_uri(uri) : NULL;
    if (sip_guard_state().ipv6_media || !uri || (!PJSIP_URI_SCHEME_IS_SIP(uri) && !PJSIP_URI_SCHEME_IS_SIPS(uri)))
        return false;
    const pj_str_t *host = &((const pjsip_sip_uri *)uri)->host;  /* an IPv6 reference, brackets stripped */
    return host->slen > 0 && memchr(host->ptr, ':', (size_t)host->slen) != NULL;
}

/* A request PJSIP could not parse (or lacking a header it requires) is answered from its raw text:
 * 505 for another SIP version (RFC 4475 `badvers`), else 400, with its Via, From, To, Call-ID and
 * CSeq lines as received (RFC 3261 8.2.6.2), sent where it came from (its Via cannot be trusted).
 * A response, an ACK, text without a request line ending in SIP/x.y or without a Via (no
 * transaction could match an answer) is dropped, as RFC 3261 17.2 and 18.3 allow. */
static inline bool sip_guard_answer_raw(pjsip_rx_data *rdata, const char *data, size_t len)
{
    std::string head(data, len);
    size_t blank = head.find("\r\n\r\n");
    head.resize(blank == std::string::npos ? head.size() : blank + 2);
    std::string line = head.substr(0, head.find("\r\n"));
    size_t sp = line.find(' '), last = line.find_last_not_of(" \t");
    if (sp == std::string::npos || sp == 0 || last == std::string::npos || line.compare(0, 4, "SIP/") == 0)
        return false;
    line.erase(last + 1);
    std::string version = line.substr(line.find_last_of(" \t") + 1);
    if (line.compare(0, sp, "ACK") == 0 || pj_ansi_strnicmp(version.c_str(), "SIP/", 4) != 0)
        return false;
    std::string copied;  /* the headers the answer repeats */
    bool via = false;
    for (size_t pos = head.find("\r\n"); pos != std::string::npos && pos + 2 < head.size();) {
        size_t start = pos + 2, end = head.find("\r\n", start);
        while (end != std::string::npos && end + 2 < head.size() && (head[end + 2] == ' ' || head[end + 2] == '\t'))
            end = head.find("\r\n", end + 2);  /* a continuation line belongs to its header */
        std::string header = head.substr(start, end == std::string::npos ? std::string::npos : end - start);
        pos = end;
        std::string name = header.substr(0, header.find(':'));
        name.erase(name.find_last_not_of(" \t") + 1);
        for (char &c : name)
            c = (char)tolower((unsigned char)c);
        bool to = name == "to" || name == "t";
        via = via || name == "via" || name == "v";
        if (std::string(",via,v,from,f,to,t,call-id,i,cseq,").find("," + name + ",") == std::string::npos)
            continue;
        copied += header;
        if (to && header.find("tag") == std::string::npos)
            copied += ";tag=sg" + std::to_string(sip_guard_state().counts[GUARD_UNPARSEABLE]);  /* 8.2.6.2 */
        copied += "\r\n";
    }
    if (!via)
        return false;
    std::string answer = (pj_ansi_stricmp(version.c_str(), "SIP/2.0") == 0 ? "SIP/2.0 400 Bad Request\r\n" : "SIP/2.0 505 Version Not Supported\r\n") +
                         copied + "Content-Length: 0\r\n\r\n";
    pjsip_tpselector sel = {};  /* the transport it came on: on a stream, the same connection */
    sel.type = PJSIP_TPSELECTOR_TRANSPORT;
    sel.u.transport = rdata->tp_info.transport;
    pj_status_t status = pjsip_tpmgr_send_raw(
        pjsip_endpt_get_tpmgr(pjsua_get_pjsip_endpt()), (pjsip_transport_type_e)sel.u.transport->key.type, &sel, NULL,
        answer.data(), answer.size(), &rdata->pkt_info.src_addr, rdata->pkt_info.src_addr_len, NULL, NULL);
    return status == PJ_SUCCESS || status == PJ_EPENDING;
}

/* A stream whose framing cannot be trusted is closed: whatever follows the bad message in it
 * would be read from the wrong place. (Datagrams carry one message each and need no closing.) */
static inline void sip_guard_close_stream(pjsip_transport *tp)
{
    if (tp && (tp->flag & PJSIP_TRANSPORT_RELIABLE) != 0)
        pjsip_transport_shutdown(tp);
}

/* PJSIP's report of bytes it dropped. Those it could not frame as a message (no Content-Length
 * on a stream, a Content-Length it cannot read, a message larger than its buffer) close the
 * stream; a message that was framed but does not parse (PJSIP_EINVALIDMSG) leaves the stream
 * as it is, since the next message still starts in the right place. */
static inline void sip_guard_dropped(pjsip_tp_dropped_data *data)
{
    bool unparsed = data->status == PJSIP_EINVALIDMSG || data->status == PJSIP_EMISSINGHDR ||
                    data->status == PJSIP_EINVALIDHDR;
    if (unparsed && data->rdata && data->data && data->len > 0 &&
        sip_guard_answer_raw(data->rdata, (const char *)data->data, data->len))
        ++sip_guard_state().counts[GUARD_UNPARSEABLE];
    if (data->status != PJSIP_ERXOVERFLOW && data->status != PJSIP_EMISSINGHDR &&
        data->status != PJSIP_EINVALIDHDR)
        return;
    if (data->tp && (data->tp->flag & PJSIP_TRANSPORT_RELIABLE) != 0) {
        ++sip_guard_state().counts[GUARD_BAD_FRAMING];
        sip_guard_close_stream(data->tp);
    }
}

static inline bool sip_guard_source_allowed(const pjsip_rx_data *rdata)
{
    const pj_sockaddr *src = &rdata->pkt_info.src_addr;
    int family = src->addr.sa_family;
    const unsigned char *addr = (const unsigned char *)pj_sockaddr_get_addr(src);
    for (const SipGuardNetwork &net : sip_guard_state().replaces_sources) {
        if (net.family != family)
            continue;
        unsigned whole = net.prefix / 8, rest = net.prefix % 8;
        if (memcmp(addr, net.bytes, whole) != 0)
            continue;
        if (rest && ((addr[whole] ^ net.bytes[whole]) & (0xFF00 >> rest) & 0xFF) != 0)
            continue;
        return true;
    }
    return false;
}

static inline pj_bool_t sip_guard_check(pjsip_rx_data *rdata)
{
    SipGuardState &st = sip_guard_state();
    const pjsip_method *method = &rdata->msg_info.msg->line.req.method;
    bool ack = method->id == PJSIP_ACK_METHOD;
    if (!sip_guard_framing_ok(rdata)) {
        ++st.counts[GUARD_BAD_FRAMING];
        if (!ack)
            sip_guard_answer(rdata, PJSIP_SC_BAD_REQUEST, NULL, false);
        sip_guard_close_stream(rdata->tp_info.transport);
        return PJ_TRUE;
    }
    if (!sip_guard_request_line_ok(rdata)) {
        ++st.counts[GUARD_UNPARSEABLE];
        if (!ack)
            sip_guard_answer(rdata, PJSIP_SC_BAD_REQUEST, NULL, false);
        return PJ_TRUE;
    }
    if (ack || method->id == PJSIP_CANCEL_METHOD)
        return PJ_FALSE;
    bool out_of_dialog = rdata->msg_info.to && rdata->msg_info.to->tag.slen == 0;
    static const char *const not_served[] = {"REGISTER", "PUBLISH", "SUBSCRIBE", "MESSAGE"};
    for (const char *name : not_served) {
        if (out_of_dialog && sip_guard_method_is(method, name)) {
            /* pjsua would take these (presence, pager); the bridge is neither a registrar nor a
             * presence or message server. */
            ++st.counts[GUARD_NOT_ALLOWED];
            sip_guard_answer(rdata, PJSIP_SC_METHOD_NOT_ALLOWED, sip_guard_allow(), true);
            return PJ_TRUE;
        }
    }
    if (!sip_guard_scheme_ok(rdata)) {
        ++st.counts[GUARD_BAD_SCHEME];
        sip_guard_answer(rdata, PJSIP_SC_UNSUPPORTED_URI_SCHEME, NULL, false);
        return PJ_TRUE;
    }
    pjsip_hdr *unsupported = sip_guard_unsupported(rdata);
    if (unsupported) {
        ++st.counts[GUARD_BAD_REQUIRE];
        sip_guard_answer(rdata, PJSIP_SC_BAD_EXTENSION, unsupported, false);
        return PJ_TRUE;
    }
    bool new_invite = method->id == PJSIP_INVITE_METHOD && out_of_dialog;
    static const pj_str_t replaces = {(char *)"Replaces", 8};
    if (new_invite && pjsip_msg_find_hdr_by_name(rdata->msg_info.msg, &replaces, NULL) &&
        !sip_guard_source_allowed(rdata)) {
        /* Before PJSIP looks for the dialog to replace (481 when there is none): a stranger
         * gets the allow-list's answer, as for any other INVITE. */
        ++st.counts[GUARD_REPLACES_FORBIDDEN];
        sip_guard_answer(rdata, PJSIP_SC_FORBIDDEN, NULL, false);
        return PJ_TRUE;
    }
    if (new_invite && !sip_guard_accepts_sdp(rdata)) {
        ++st.counts[GUARD_NOT_ACCEPTABLE];
        sip_guard_answer(rdata, PJSIP_SC_NOT_ACCEPTABLE, NULL, false);
        return PJ_TRUE;
    }
    const pjsip_msg_body *body = rdata->msg_info.msg->body;
    if (new_invite && body && body->len > 0 && body->content_type.type.slen > 0 &&
        pj_stricmp2(&body->content_type.type, "multipart") != 0 &&
        (pj_stricmp2(&body->content_type.type, "application") != 0 ||
         pj_stricmp2(&body->content_type.subtype, "sdp") != 0)) {
        /* A body the bridge cannot read (RFC 4475 `invut`): 415 with what it reads (RFC 3261 8.2.3). */
        pjsip_accept_hdr *accept = pjsip_accept_hdr_create(rdata->tp_info.pool);
        accept->values[accept->count++] = pj_str((char *)"application/sdp");
        accept->values[accept->count++] = pj_str((char *)"multipart/mixed");
        ++st.counts[GUARD_UNSUPPORTED_BODY];
        sip_guard_answer(rdata, PJSIP_SC_UNSUPPORTED_MEDIA_TYPE, (pjsip_hdr *)accept, false);
        return PJ_TRUE;
    }
    if (new_invite && sip_guard_target_unreachable(rdata)) {
        static pj_str_t warning = {(char *)"Warning", 7}, why = pj_str((char *)"399 sip-ws-bridge \"IPv6 Contact\"");
        ++st.counts[GUARD_UNREACHABLE_CONTACT];
        pjsip_hdr *hdr = (pjsip_hdr *)pjsip_generic_string_hdr_create(rdata->tp_info.pool, &warning, &why);
        sip_guard_answer(rdata, PJSIP_SC_NOT_ACCEPTABLE_HERE, hdr, false);
        return PJ_TRUE;
    }
    if (new_invite && !sip_guard_media_ok(rdata)) {
        ++st.counts[GUARD_BAD_MEDIA];
        sip_guard_answer(rdata, PJSIP_SC_NOT_ACCEPTABLE_HERE, NULL, false);
        return PJ_TRUE;
    }
    return PJ_FALSE;
}

static inline pj_bool_t sip_guard_fallback(pjsip_rx_data *rdata)
{
    SipGuardState &st = sip_guard_state();
    const pjsip_method *method = &rdata->msg_info.msg->line.req.method;
    if (method->id == PJSIP_ACK_METHOD)
        return PJ_FALSE;  /* never answered */
    static const char *const in_dialog[] = {"BYE", "CANCEL", "INFO", "UPDATE", "REFER", "PRACK", "NOTIFY"};
    static const char *const known[] = {"INVITE", "OPTIONS", "REGISTER", "SUBSCRIBE", "PUBLISH",
                                        "MESSAGE"};
    bool has_tag = rdata->msg_info.to && rdata->msg_info.to->tag.slen > 0;
    bool dialog_method = false;
    for (const char *name : in_dialog)
        dialog_method = dialog_method || sip_guard_method_is(method, name);
    if (has_tag || dialog_method) {
        ++st.counts[GUARD_NO_DIALOG];
        sip_guard_answer(rdata, PJSIP_SC_CALL_TSX_DOES_NOT_EXIST, NULL,
                         method->id != PJSIP_CANCEL_METHOD);
        return PJ_TRUE;
    }
    bool is_known = false;
    for (const char *name : known)
        is_known = is_known || sip_guard_method_is(method, name);
    int code = is_known ? PJSIP_SC_METHOD_NOT_ALLOWED : PJSIP_SC_NOT_IMPLEMENTED;
    ++st.counts[is_known ? GUARD_NOT_ALLOWED : GUARD_NOT_IMPLEMENTED];
    sip_guard_answer(rdata, code, sip_guard_allow(), true);
    return PJ_TRUE;
}

#endif /* SWIG */

class SipGuard {
public:
    /* Register both modules (once; on the thread that polls PJSIP, after libInit). */
    static void install(bool ipv6_media)
    {
        SipGuardState &st = sip_guard_state();
        st.ipv6_media = ipv6_media;
        if (st.installed)
            return;
        pj_bzero(&st.checker, sizeof(st.checker));
        st.checker.name = pj_str((char *)"mod-bridge-checker");
        st.checker.id = -1;
        st.checker.priority = PJSIP_MOD_PRIORITY_TSX_LAYER - 1;
        st.checker.on_rx_request = &sip_guard_check;
        pj_bzero(&st.fallback, sizeof(st.fallback));
        st.fallback.name = pj_str((char *)"mod-bridge-fallback");
        st.fallback.id = -1;
        st.fallback.priority = PJSIP_MOD_PRIORITY_APPLICATION + 32;
        st.fallback.on_rx_request = &sip_guard_fallback;
        pjsip_endpoint *endpt = pjsua_get_pjsip_endpt();
        /* The endpoint's Allow (sent with OPTIONS answers and 405/501) loses the methods the
         * checker refuses out of a dialog; SUBSCRIBE and MESSAGE inside a call stay served. */
        pjsip_generic_array_hdr *allow = (pjsip_generic_array_hdr *)
            pjsip_endpt_get_capability(endpt, PJSIP_H_ALLOW, NULL);
        if (allow) {
            unsigned kept = 0;
            for (unsigned i = 0; i < allow->count; ++i) {
                const pj_str_t *v = &allow->values[i];
                if (pj_stricmp2(v, "REGISTER") == 0 || pj_stricmp2(v, "PUBLISH") == 0 ||
                    pj_stricmp2(v, "SUBSCRIBE") == 0 || pj_stricmp2(v, "MESSAGE") == 0)
                    continue;
                allow->values[kept++] = *v;
            }
            allow->count = kept;
        }
        pj_status_t status = pjsip_endpt_register_module(endpt, &st.checker);
        if (status == PJ_SUCCESS)
            status = pjsip_endpt_register_module(endpt, &st.fallback);
        if (status == PJ_SUCCESS)
            status = pjsip_tpmgr_set_drop_data_cb(pjsip_endpt_get_tpmgr(endpt), &sip_guard_dropped);
        if (status != PJ_SUCCESS)
            PJSUA2_RAISE_ERROR2(status, "SipGuard::install");
        st.installed = true;
    }

    /* Unregister before libDestroy (the modules live in this process's memory). */
    static void uninstall()
    {
        SipGuardState &st = sip_guard_state();
        if (!st.installed)
            return;
        pjsip_endpoint *endpt = pjsua_get_pjsip_endpt();
        pjsip_tpmgr_set_drop_data_cb(pjsip_endpt_get_tpmgr(endpt), NULL);
        pjsip_endpt_unregister_module(endpt, &st.fallback);
        pjsip_endpt_unregister_module(endpt, &st.checker);
        st.installed = false;
    }

    /* The networks (CIDR: "127.0.0.0/8", "::1/128") that may send an INVITE with Replaces far
     * enough to be refused by the bridge's own rule; the rest get 403 at once. */
    static void setReplacesSources(const StringVector &cidrs)
    {
        std::vector<SipGuardNetwork> nets;
        for (const std::string &cidr : cidrs) {
            SipGuardNetwork net;
            pj_bzero(&net, sizeof(net));
            std::string addr = cidr.substr(0, cidr.find('/'));
            bool v6 = addr.find(':') != std::string::npos;
            net.family = v6 ? PJ_AF_INET6 : PJ_AF_INET;
            unsigned max = v6 ? 128 : 32;
            net.prefix = cidr.find('/') == std::string::npos ? max
                         : (unsigned)atoi(cidr.c_str() + cidr.find('/') + 1);
            pj_str_t text = pj_str((char *)addr.c_str());
            if (net.prefix > max || pj_inet_pton(net.family, &text, net.bytes) != PJ_SUCCESS)
                PJSUA2_RAISE_ERROR2(PJ_EINVAL, "SipGuard::setReplacesSources");
            nets.push_back(net);
        }
        sip_guard_state().replaces_sources.swap(nets);
    }

    /* Requests answered or dropped, in SipGuardCount order. */
    static IntVector counts()
    {
        IntVector out;
        for (unsigned long c : sip_guard_state().counts)
            out.push_back((int)c);
        return out;
    }

    /* How many packets in a row from a new source move a stream's RTP (and RTCP) there;
     * 0xFFFFFFFF: never, once the stream has heard its remote address. Process-wide. */
    static void setLatching(unsigned rtp_packets, unsigned rtcp_packets)
    {
        bridge_rtp_nat_probation_cnt = rtp_packets;
        bridge_rtcp_nat_probation_cnt = rtcp_packets;
    }
};

/* The one conference call Python needs that pjsua2 does not offer. */
class ConfPort {
public:
    /* Stop the conference calling the port in `slot` (neither direction), so its Python object can
     * be freed: Python clears a port's attributes before the C++ destructor takes it out of the
     * conference (releasing the GIL around it); the clock thread could call the port in between.
     * At once when the slot is unused. Under the conference's lock: no callback runs after it. */
    static void disable(int slot)
    {
        if (slot >= 0)
            pjsua_conf_configure_port(slot, PJMEDIA_PORT_DISABLE, PJMEDIA_PORT_DISABLE);
    }
};

} // namespace pj

#endif /* BRIDGE_SIP_GUARD_HPP */
