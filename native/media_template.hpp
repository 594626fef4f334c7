/*
 * A bot dialect's message as the native sender writes it: literal bytes around slots that the
 * sender fills in (the counters, the payload). The dialect (bridge/bot/, see template.py there)
 * builds the template in Python once per stream; the sender thread renders one message per chunk
 * from it without knowing the dialect's format. GPL-2.0-or-later, like PJSIP.
 *
 * The template's bytes: literal bytes, except that a NUL starts a slot and the byte after it
 * says which (bridge/bot/template.py, Slot, is the same list):
 *   s  the sequence number (the pipe numbers every message it queues, media and events)
 *   c  the chunk number (media messages of the stream, from 1)
 *   t  the timestamp: milliseconds of caller audio up to the end of this chunk
 *   n  the samples of caller audio up to the end of this chunk
 *   p  the chunk as base64 of PCM16LE
 *   u  the chunk as base64 of G.711 mu-law (Sun's g711.c, as audioop and PJSIP encode it)
 *   0  a literal NUL byte
 * Numbers are decimal ASCII. A media template has exactly one payload slot; an event's has none.
 */
#ifndef BRIDGE_MEDIA_TEMPLATE_HPP
#define BRIDGE_MEDIA_TEMPLATE_HPP

#ifndef SWIG
#include <string>
#include <vector>
#include <cstdio>
#include <cstring>

namespace pj {

/* The counters a message is rendered with (after this chunk, for media). */
struct SendCounters {
    long long seq;
    long long chunk;
    long long samples;
    unsigned rate;
};

class SendTemplate {
public:
    /* Read a template (see the top of this file); false, leaving it empty, if a slot code is
     * unknown, or the payload slots are not what `media` asks for (one if media, else none). */
    bool parse(const char *src, size_t n, bool media)
    {
        lit_.clear();
        pieces_.clear();
        size_t payloads = 0, start = 0;
        for (size_t i = 0; i < n; ++i) {
            if (src[i] != '\0')
                continue;
            if (i + 1 >= n || !known(src[i + 1])) {
                clear();
                return false;
            }
            char code = src[i + 1];
            if (code == kPcm16Base64 || code == kUlawBase64)
                payloads += 1;
            size_t at = lit_.size();
            lit_.append(src + start, i - start);
            if (code == '0') {
                lit_.push_back('\0');  /* a literal NUL: part of the next piece's text */
                pieces_.push_back({at, lit_.size() - at, 0});
            } else {
                pieces_.push_back({at, lit_.size() - at, code});
            }
            start = i + 2;
            i += 1;
        }
        size_t at = lit_.size();
        lit_.append(src + start, n - start);
        pieces_.push_back({at, lit_.size() - at, 0});
        if (payloads != (media ? 1u : 0u)) {
            clear();
            return false;
        }
        return true;
    }

    void clear()
    {
        lit_.clear();
        pieces_.clear();
    }

    /* out = the message for these counters and payload (pcm: n bytes of PCM16LE). `law` is the
     * caller's scratch of at least n / 2 bytes for a mu-law payload (no allocation here). */
    void render(std::string &out, const SendCounters &c, const char *pcm, size_t n,
                unsigned char *law) const
    {
        out.clear();
        for (const Piece &p : pieces_) {
            out.append(lit_, p.at, p.len);
            switch (p.slot) {
            case kSeq: appendNumber(out, c.seq); break;
            case kChunk: appendNumber(out, c.chunk); break;
            case kTimestampMs: appendNumber(out, c.rate ? c.samples * 1000 / c.rate : 0); break;
            case kSamples: appendNumber(out, c.samples); break;
            case kPcm16Base64: appendBase64(out, (const unsigned char *)pcm, n); break;
            case kUlawBase64: {
                const unsigned char *table = ulawTable();
                size_t samples = n / 2;
                const unsigned char *src = (const unsigned char *)pcm;
                for (size_t i = 0; i < samples; ++i)
                    law[i] = table[((short)(src[2 * i] | src[2 * i + 1] << 8) >> 2) + 8192];
                appendBase64(out, law, samples);
                break;
            }
            default: break;
            }
        }
    }

    /* G.711 mu-law of one PCM16 sample: Sun's st_14linear2ulaw on the top 14 bits, bit-exact
     * with audioop.lin2ulaw (bridge/audio/g711.py) and PJSIP's encoder. */
    static unsigned char ulaw(short sample) { return ulawTable()[(sample >> 2) + 8192]; }

    static unsigned char ulaw14(int v)
    {
        static const short segEnd[8] = {0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF};
        int mask = 0xFF;
        if (v < 0) {
            v = -v;
            mask = 0x7F;
        }
        if (v > 8159)
            v = 8159;  /* CLIP */
        v += 0x84 >> 2;  /* BIAS */
        int seg = 0;
        while (seg < 8 && v > segEnd[seg])
            seg += 1;
        if (seg >= 8)
            return (unsigned char)(0x7F ^ mask);
        return (unsigned char)(((seg << 4) | ((v >> (seg + 1)) & 0xF)) ^ mask);
    }

    /* Every 14-bit value's code, made once (thread-safe static initialisation): a table lookup
     * per sample on the sender thread instead of the segment search. */
    static const unsigned char *ulawTable()
    {
        static const std::vector<unsigned char> table = [] {
            std::vector<unsigned char> t(16384);
            for (int v = -8192; v < 8192; ++v)
                t[(size_t)(v + 8192)] = ulaw14(v);
            return t;
        }();
        return table.data();
    }

    static void appendNumber(std::string &out, long long v)
    {
        char tmp[24];
        int k = snprintf(tmp, sizeof(tmp), "%lld", v);
        out.append(tmp, (size_t)k);
    }

    static void appendBase64(std::string &out, const unsigned char *src, size_t n)
    {
        static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        size_t at = out.size();
        out.resize(at + (n + 2) / 3 * 4);
        char *dst = &out[at];
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
    }

private:
    enum : char {
        kSeq = 's', kChunk = 'c', kTimestampMs = 't', kSamples = 'n', kPcm16Base64 = 'p',
        kUlawBase64 = 'u',
    };
    static bool known(char code)
    {
        return code == kSeq || code == kChunk || code == kTimestampMs || code == kSamples
            || code == kPcm16Base64 || code == kUlawBase64 || code == '0';
    }
    /* lit_[at, at + len), then the slot (0: none). */
    struct Piece {
        size_t at, len;
        char slot;
    };
    std::string lit_;
    std::vector<Piece> pieces_;
};

} // namespace pj
#endif

#endif
