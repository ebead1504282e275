/* imagestore native core: streaming SHA-256 (OpenSSL EVP) fused with gzip
 * (ISA-L igzip when built with ISN_HAVE_ISAL, else zlib). See the header for
 * the contract. */

#define _GNU_SOURCE /* pthread_setname_np, sync_file_range, fallocate */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <zlib.h>
#ifdef ISN_HAVE_ISAL
#include <isa-l/igzip_lib.h>
#endif

#include "imagestore_native.h"

/* Library calls take 32-bit lengths; larger buffers go through in slices. */
#define ISN_MAX_SLICE ((size_t)1 << 30)
/* Digest-only decoding inflates into this scratch buffer and drops it. */
#define ISN_SCRATCH_SIZE ((size_t)256 * 1024)
/* The smallest output buffer update accepts: room for held-back header bytes. */
#define ISN_MIN_OUT 16
#define ISN_MSG_SIZE 256

static const unsigned char GZIP_MAGIC[2] = {0x1f, 0x8b};
static const unsigned char ZSTD_MAGIC[4] = {0x28, 0xb5, 0x2f, 0xfd};

#ifdef ISN_HAVE_ISAL
/* ISA-L's AVX2 and AVX-512 code returns with the upper halves of the vector
 * registers still in use (it ends without vzeroupper). OpenSSL's SHA-256 runs
 * SSE-encoded instructions, which then pay for that state on every step until
 * something clears it: on this thread every later SHA-256 ran ~25% slower
 * (docs/design.md §5). Called after each ISA-L call; a no-op without AVX. */
static void clear_upper_vector_state(void)
{
#if defined(__x86_64__) || defined(__i386__)
    if (__builtin_cpu_supports("avx"))
        __asm__ volatile("vzeroupper");
#endif
}
#endif

const char *isn_gzip_backend(void)
{
#ifdef ISN_HAVE_ISAL
    return "isa-l";
#else
    return "zlib";
#endif
}

int isn_start_writeback(int fd)
{
#ifdef __linux__
    /* Up to the last whole page before the write position (the end, for a
     * file being appended to): a partial last page is written again by the
     * next write, which would wait for it where the disk wants stable pages.
     * Pages already being written are skipped, not waited for. */
    off_t end = lseek(fd, 0, SEEK_CUR);
    long page = sysconf(_SC_PAGESIZE);
    if (end < 0)
        return errno;
    end -= end % (page > 0 ? page : 4096);
    if (end > 0 && sync_file_range(fd, 0, end, SYNC_FILE_RANGE_WRITE) != 0)
        return errno;
#else
    (void)fd;
#endif
    return 0;
}

int isn_reserve(int fd, uint64_t offset, uint64_t length)
{
#ifdef __linux__
    /* Mode 0: the blocks are allocated and the size grows to offset + length
     * at once. A file system that cannot preallocate goes on without it. */
    int rc;
    if (length == 0)
        return 0;
    do
        rc = fallocate(fd, 0, (off_t)offset, (off_t)length);
    while (rc != 0 && errno == EINTR);
    if (rc != 0)
        return errno == EOPNOTSUPP || errno == ENOSYS ? 0 : errno;
#else
    (void)fd;
    (void)offset;
    (void)length;
#endif
    return 0;
}

const char *isn_strerror(int status)
{
    switch (status) {
    case ISN_OK: return "ok";
    case ISN_ERR_NOMEM: return "out of memory";
    case ISN_ERR_CORRUPT: return "corrupt compressed data";
    case ISN_ERR_TRUNCATED: return "compressed data is truncated";
    case ISN_ERR_TRAILING: return "unexpected data after the compressed stream";
    case ISN_ERR_LIMIT: return "uncompressed size exceeds the limit";
    case ISN_ERR_UNSUPPORTED: return "unsupported compression";
    case ISN_ERR_STATE: return "operation not allowed in the handle's state";
    case ISN_ERR_ARGUMENT: return "invalid argument";
    case ISN_ERR_INTERNAL: return "internal error in a native library";
    case ISN_ERR_IO: return "writing to the sink failed";
    default: return "unknown status";
    }
}

/* ---- SHA-256 ------------------------------------------------------------ */

struct isn_sha256 {
    EVP_MD_CTX *ctx;
    uint64_t size;
    int finished;
};

static EVP_MD_CTX *sha256_ctx_new(void)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

static int sha256_ctx_update(EVP_MD_CTX *ctx, const unsigned char *data, size_t len)
{
    if (len == 0)
        return ISN_OK;
    return EVP_DigestUpdate(ctx, data, len) == 1 ? ISN_OK : ISN_ERR_INTERNAL;
}

static int sha256_ctx_final(EVP_MD_CTX *ctx, unsigned char digest[32])
{
    unsigned int n = 0;
    if (EVP_DigestFinal_ex(ctx, digest, &n) != 1 || n != 32)
        return ISN_ERR_INTERNAL;
    return ISN_OK;
}

int isn_sha256_new(isn_sha256 **out)
{
    isn_sha256 *h;
    if (out == NULL)
        return ISN_ERR_ARGUMENT;
    *out = NULL;
    h = calloc(1, sizeof(*h));
    if (h == NULL)
        return ISN_ERR_NOMEM;
    h->ctx = sha256_ctx_new();
    if (h->ctx == NULL) {
        free(h);
        return ISN_ERR_NOMEM;
    }
    *out = h;
    return ISN_OK;
}

int isn_sha256_update(isn_sha256 *h, const unsigned char *data, size_t len)
{
    int rc;
    if (h == NULL || (data == NULL && len > 0))
        return ISN_ERR_ARGUMENT;
    if (h->finished)
        return ISN_ERR_STATE;
    rc = sha256_ctx_update(h->ctx, data, len);
    if (rc == ISN_OK)
        h->size += len;
    return rc;
}

int isn_sha256_finish(isn_sha256 *h, unsigned char digest[32], uint64_t *size)
{
    if (h == NULL || digest == NULL || size == NULL)
        return ISN_ERR_ARGUMENT;
    if (h->finished)
        return ISN_ERR_STATE;
    h->finished = 1;
    *size = h->size;
    return sha256_ctx_final(h->ctx, digest);
}

void isn_sha256_free(isn_sha256 *h)
{
    if (h == NULL)
        return;
    EVP_MD_CTX_free(h->ctx);
    free(h);
}

/* ---- inflate engine: one gzip member at a time --------------------------- */

struct inflater {
#ifdef ISN_HAVE_ISAL
    struct inflate_state state;
#else
    z_stream z;
    int z_ready;
#endif
};

struct step {
    size_t consumed;
    size_t produced;
    int member_end;
};

static int inflater_init(struct inflater *f)
{
#ifdef ISN_HAVE_ISAL
    isal_inflate_init(&f->state);
    f->state.crc_flag = ISAL_GZIP;
    return ISN_OK;
#else
    memset(&f->z, 0, sizeof(f->z));
    if (inflateInit2(&f->z, 16 + MAX_WBITS) != Z_OK)
        return ISN_ERR_NOMEM;
    f->z_ready = 1;
    return ISN_OK;
#endif
}

static int inflater_reset(struct inflater *f)
{
#ifdef ISN_HAVE_ISAL
    isal_inflate_reset(&f->state);
    f->state.crc_flag = ISAL_GZIP;
    return ISN_OK;
#else
    return inflateReset(&f->z) == Z_OK ? ISN_OK : ISN_ERR_INTERNAL;
#endif
}

static void inflater_end(struct inflater *f)
{
#ifdef ISN_HAVE_ISAL
    (void)f;
#else
    if (f->z_ready)
        inflateEnd(&f->z);
    f->z_ready = 0;
#endif
}

/* Inflate from in into out; on error fills msg with the library's reason. */
static int inflater_step(struct inflater *f, const unsigned char *in, size_t in_len,
                         unsigned char *out, size_t out_cap, struct step *st,
                         char *msg, size_t msg_size)
{
    if (in_len > ISN_MAX_SLICE)
        in_len = ISN_MAX_SLICE;
    if (out_cap > ISN_MAX_SLICE)
        out_cap = ISN_MAX_SLICE;
#ifdef ISN_HAVE_ISAL
    {
        struct inflate_state *s = &f->state;
        int ret;
        /* ISA-L never writes through next_in; the cast only drops const. */
        s->next_in = (uint8_t *)(uintptr_t)in;
        s->avail_in = (uint32_t)in_len;
        s->next_out = out;
        s->avail_out = (uint32_t)out_cap;
        ret = isal_inflate(s);
        clear_upper_vector_state();
        st->consumed = in_len - s->avail_in;
        st->produced = out_cap - s->avail_out;
        st->member_end = s->block_state == ISAL_BLOCK_FINISH;
        if (ret >= 0)
            return ISN_OK;
        switch (ret) {
        case ISAL_INVALID_WRAPPER:
            snprintf(msg, msg_size, "invalid gzip header");
            break;
        case ISAL_UNSUPPORTED_METHOD:
            snprintf(msg, msg_size, "gzip header names an unsupported method");
            break;
        case ISAL_INCORRECT_CHECKSUM:
            snprintf(msg, msg_size, "gzip trailer CRC-32 or length does not match");
            break;
        default:
            snprintf(msg, msg_size, "invalid deflate data (igzip error %d)", ret);
            break;
        }
        return ISN_ERR_CORRUPT;
    }
#else
    {
        z_stream *z = &f->z;
        int ret;
        z->next_in = (Bytef *)(uintptr_t)in;
        z->avail_in = (uInt)in_len;
        z->next_out = out;
        z->avail_out = (uInt)out_cap;
        ret = inflate(z, Z_NO_FLUSH);
        st->consumed = in_len - z->avail_in;
        st->produced = out_cap - z->avail_out;
        st->member_end = ret == Z_STREAM_END;
        switch (ret) {
        case Z_OK:
        case Z_STREAM_END:
        case Z_BUF_ERROR: /* no progress possible: needs more input */
            return ISN_OK;
        case Z_MEM_ERROR:
            return ISN_ERR_NOMEM;
        default:
            snprintf(msg, msg_size, "%s", z->msg != NULL ? z->msg : "invalid deflate data");
            return ISN_ERR_CORRUPT;
        }
    }
#endif
}

/* Write all of data to fd (a short write is continued, EINTR retried):
 * 0, or the errno of the write that failed. */
static int write_all(int fd, const unsigned char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len > ISN_MAX_SLICE ? ISN_MAX_SLICE : len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

/* ---- decoder's hasher thread ---------------------------------------------- */

/* In digest-only mode a decoder can split its work over two threads: the
 * caller's thread inflates into a ring of output slots, the hasher thread
 * hashes the caller's input and each full slot (the two SHA-256 streams are
 * independent, so it alternates between them), and writes each piece of
 * input to the decoder's sink, if it has one, after hashing it (pieces of
 * input are taken in order, one at a time). The ring bounds the memory;
 * the caller waits only when all slots are full, and each update waits for
 * its input to be hashed, since the caller's buffer is only lent for the call.
 * While it waits the caller hashes whatever the hasher has not taken yet. */

/* A slot of the ring; slot 0 is the decoder's scratch buffer. 8 slots of
 * 256 KiB (2 MiB a decoder, while it has a hasher) let the caller inflate
 * about one scheduler slice (~3 ms) ahead of a hasher that was preempted. */
#define ISN_SLOT_SIZE ISN_SCRATCH_SIZE
#define ISN_RING_SLOTS 8
/* Input is hashed in pieces of this size, taking turns with the slots. */
#define ISN_IN_PIECE ((size_t)256 * 1024)
/* ISN_THREADS_AUTO starts the hasher once this many bytes were fed: below
 * it a thread costs more than it saves (many tiny layers). */
#define ISN_THREAD_AFTER ((uint64_t)1 << 20)
#define ISN_HASHER_THREAD_NAME "imagestore-hash"

struct hasher {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake; /* to the hasher: work, or stop */
    pthread_cond_t done; /* to the caller: a piece was hashed */
    EVP_MD_CTX *in_hash;
    EVP_MD_CTX *out_hash;
    unsigned char *slots[ISN_RING_SLOTS];
    unsigned char *extra_slots; /* one block for slots 1.. */
    size_t lens[ISN_RING_SLOTS];
    /* Guarded by lock: the published slots not yet hashed are head ..
     * head + count - 1 (mod the ring); the input lent by the current update. */
    unsigned head;
    unsigned count;
    const unsigned char *in;
    size_t in_len;
    size_t in_done;
    int sink; /* where the input goes too, or -1 */
    /* A thread is hashing a piece of this stream (outside the lock). */
    int in_busy;
    int out_busy;
    int hasher_waiting;
    int caller_waiting;
    int stop;
    int failed; /* an EVP update failed */
    int sink_errno; /* a write to the sink failed: its errno */
    /* The caller's alone: the slot being filled, (head + count) mod the ring. */
    unsigned fill;
    size_t fill_len;
};

/* The next piece of one stream: the oldest slot, or the next input bytes. */
struct piece {
    EVP_MD_CTX *ctx;
    const unsigned char *data;
    size_t len;
    int slot;
    int sink; /* input: also written here (-1: nowhere) */
};

/* Lock held: whether a piece is there that nobody is hashing. */
static int hasher_has_work(const struct hasher *h)
{
    return (!h->in_busy && h->in_done < h->in_len) || (!h->out_busy && h->count > 0);
}

/* Lock held: claim the next piece of a stream nobody is hashing (of the
 * input first when prefer_input, else of the ring); 0 when there is none. */
static int hasher_claim(struct hasher *h, int prefer_input, struct piece *p)
{
    int input_ready = !h->in_busy && h->in_done < h->in_len;
    int slot_ready = !h->out_busy && h->count > 0;
    if (!input_ready && !slot_ready)
        return 0;
    p->slot = slot_ready && (!input_ready || !prefer_input);
    if (p->slot) {
        h->out_busy = 1;
        p->ctx = h->out_hash;
        p->data = h->slots[h->head];
        p->len = h->lens[h->head];
    } else {
        h->in_busy = 1;
        p->sink = h->sink;
        p->ctx = h->in_hash;
        p->data = h->in + h->in_done;
        p->len = h->in_len - h->in_done;
        if (p->len > ISN_IN_PIECE)
            p->len = ISN_IN_PIECE;
    }
    return 1;
}

static void hasher_wake(struct hasher *h)
{
    if (h->hasher_waiting)
        pthread_cond_signal(&h->wake);
}

/* Lock held on entry and on return: hash a claimed piece outside the lock,
 * then release its stream and tell the other thread. */
static void hasher_hash(struct hasher *h, const struct piece *p, int by_caller)
{
    int ok, write_err = 0;
    pthread_mutex_unlock(&h->lock);
    ok = sha256_ctx_update(p->ctx, p->data, p->len) == ISN_OK;
    if (ok && !p->slot && p->sink >= 0)
        write_err = write_all(p->sink, p->data, p->len);
    pthread_mutex_lock(&h->lock);
    if (!ok)
        h->failed = 1;
    if (write_err != 0 && h->sink_errno == 0)
        h->sink_errno = write_err;
    if (p->slot) {
        h->head = (h->head + 1) % ISN_RING_SLOTS;
        h->count--;
        h->out_busy = 0;
    } else {
        h->in_done += p->len;
        h->in_busy = 0;
    }
    if (by_caller)
        hasher_wake(h); /* the stream it may have waited for is free again */
    else if (h->caller_waiting)
        pthread_cond_signal(&h->done);
}

static void *hasher_main(void *arg)
{
    struct hasher *h = arg;
    int input_turn = 1; /* take turns: neither stream waits behind the other */
    struct piece p;
    pthread_mutex_lock(&h->lock);
    for (;;) {
        while (!h->stop && !hasher_has_work(h)) {
            h->hasher_waiting = 1;
            pthread_cond_wait(&h->wake, &h->lock);
            h->hasher_waiting = 0;
        }
        if (h->stop)
            break;
        hasher_claim(h, input_turn, &p);
        input_turn = p.slot;
        hasher_hash(h, &p, 0);
    }
    pthread_mutex_unlock(&h->lock);
    return NULL;
}

/* Lock held: the caller has to wait for the hasher's progress. Rather than
 * sleep, it hashes a piece the hasher has not taken (the hasher may not be
 * running: on a busy machine the work then stays on one thread); it sleeps
 * only while the hasher is in the middle of a piece. */
static void caller_help_or_wait(struct hasher *h, int prefer_input)
{
    struct piece p;
    if (hasher_claim(h, prefer_input, &p)) {
        hasher_hash(h, &p, 1);
        return;
    }
    h->caller_waiting = 1;
    pthread_cond_wait(&h->done, &h->lock);
    h->caller_waiting = 0;
}

/* Lend the hasher the input of this update, to hash and write to sink. */
static void hasher_lend_input(struct hasher *h, const unsigned char *in, size_t len, int sink)
{
    pthread_mutex_lock(&h->lock);
    h->in = in;
    h->in_len = len;
    h->in_done = 0;
    h->sink = sink;
    hasher_wake(h);
    pthread_mutex_unlock(&h->lock);
}

/* Before the update returns: the lent input must be hashed. */
static void hasher_take_back_input(struct hasher *h)
{
    pthread_mutex_lock(&h->lock);
    while (h->in_done < h->in_len)
        caller_help_or_wait(h, 1);
    h->in = NULL;
    h->in_len = h->in_done = 0;
    pthread_mutex_unlock(&h->lock);
}

/* Hand the filled part of the fill slot over; make sure the next is free. */
static void hasher_publish(struct hasher *h)
{
    if (h->fill_len == 0)
        return;
    pthread_mutex_lock(&h->lock);
    h->lens[h->fill] = h->fill_len;
    h->count++;
    hasher_wake(h);
    while (h->count == ISN_RING_SLOTS)
        caller_help_or_wait(h, 0);
    pthread_mutex_unlock(&h->lock);
    h->fill = (h->fill + 1) % ISN_RING_SLOTS;
    h->fill_len = 0;
}

/* Hash everything handed over; afterwards the caller may use the contexts. */
static void hasher_drain(struct hasher *h)
{
    hasher_publish(h);
    pthread_mutex_lock(&h->lock);
    while (h->count > 0 || h->in_done < h->in_len)
        caller_help_or_wait(h, 0);
    pthread_mutex_unlock(&h->lock);
}

/* Stop and join the thread (whatever is left unhashed is dropped), free it. */
static void hasher_end(struct hasher *h)
{
    pthread_mutex_lock(&h->lock);
    h->stop = 1;
    pthread_cond_signal(&h->wake);
    pthread_mutex_unlock(&h->lock);
    pthread_join(h->thread, NULL);
    pthread_cond_destroy(&h->done);
    pthread_cond_destroy(&h->wake);
    pthread_mutex_destroy(&h->lock);
    free(h->extra_slots);
    free(h);
}

/* ---- decoder ------------------------------------------------------------- */

struct isn_decoder {
    EVP_MD_CTX *in_hash;
    EVP_MD_CTX *out_hash;
    uint64_t in_size;
    uint64_t out_size;
    uint64_t max_out;
    int format;
    int status;   /* sticky: the first error, or ISN_OK */
    int finished;
    int updated;  /* an update was made (the threading mode is fixed) */
    /* Bytes held back while the format, or the start of the next gzip
     * member, is not yet known; they are part of the stream, already hashed. */
    unsigned char head[4];
    size_t head_len;
    int between_members; /* gzip: a member ended; next bytes start another */
    int in_member;       /* gzip: inside a member (its end not yet seen) */
    uint64_t members;
    unsigned char *scratch;
    struct inflater engine;
    int engine_ready;
    int threads_mode;  /* enum isn_threads */
    int hasher_started; /* the hasher thread ran in this stream */
    int thread_failed; /* the hasher could not start: stay on one thread */
    struct hasher *hasher;
    /* During a digest-only update with the hasher: inflate into the ring
     * and leave the output's hashing to the hasher. */
    int ring_output;
    int sink;       /* input is written here too, or -1 */
    int sink_errno; /* the errno of the write that failed */
    char msg[ISN_MSG_SIZE];
};

static int decoder_fail(isn_decoder *d, int status, const char *what)
{
    d->status = status;
    snprintf(d->msg, sizeof(d->msg), "%s", what);
    return status;
}

int isn_decoder_new(isn_decoder **out, uint64_t max_out)
{
    isn_decoder *d;
    if (out == NULL)
        return ISN_ERR_ARGUMENT;
    *out = NULL;
    d = calloc(1, sizeof(*d));
    if (d == NULL)
        return ISN_ERR_NOMEM;
    d->in_hash = sha256_ctx_new();
    d->out_hash = sha256_ctx_new();
    d->scratch = malloc(ISN_SCRATCH_SIZE);
    if (d->in_hash == NULL || d->out_hash == NULL || d->scratch == NULL) {
        isn_decoder_free(d);
        return ISN_ERR_NOMEM;
    }
    d->max_out = max_out;
    d->sink = -1;
    *out = d;
    return ISN_OK;
}

void isn_decoder_free(isn_decoder *d)
{
    if (d == NULL)
        return;
    if (d->hasher != NULL)
        hasher_end(d->hasher);
    if (d->engine_ready)
        inflater_end(&d->engine);
    EVP_MD_CTX_free(d->in_hash);
    EVP_MD_CTX_free(d->out_hash);
    free(d->scratch);
    free(d);
}

int isn_decoder_set_threads(isn_decoder *d, int mode)
{
    if (d == NULL || mode < ISN_THREADS_AUTO || mode > ISN_THREADS_TWO)
        return ISN_ERR_ARGUMENT;
    if (d->updated || d->finished) {
        snprintf(d->msg, sizeof(d->msg), "threads can only be set before the first update");
        return ISN_ERR_STATE;
    }
    d->threads_mode = mode;
    return ISN_OK;
}

int isn_decoder_set_sink(isn_decoder *d, int fd)
{
    if (d == NULL || fd < -1)
        return ISN_ERR_ARGUMENT;
    d->sink = fd;
    return ISN_OK;
}

int isn_decoder_os_error(const isn_decoder *d)
{
    return d == NULL ? 0 : d->sink_errno;
}

static int decoder_sink_failed(isn_decoder *d, int err)
{
    char what[ISN_MSG_SIZE];
    d->sink_errno = err;
    snprintf(what, sizeof(what), "writing to the sink failed: %s", strerror(err));
    return decoder_fail(d, ISN_ERR_IO, what);
}

int isn_decoder_threads(const isn_decoder *d)
{
    return d != NULL && d->hasher_started ? 2 : 1;
}

const char *isn_decoder_message(const isn_decoder *d)
{
    return d == NULL ? "no decoder" : d->msg;
}

void isn_decoder_sizes(const isn_decoder *d, uint64_t *in_size, uint64_t *out_size)
{
    if (d == NULL)
        return;
    if (in_size != NULL)
        *in_size = d->in_size;
    if (out_size != NULL)
        *out_size = d->out_size;
}

/* Start the hasher thread; on any failure the decoder stays on one thread. */
static void decoder_start_hasher(isn_decoder *d)
{
    struct hasher *h = calloc(1, sizeof(*h));
    sigset_t all, old;
    unsigned i;
    int started;
    if (h == NULL)
        goto fail;
    h->extra_slots = malloc(ISN_SLOT_SIZE * (ISN_RING_SLOTS - 1));
    if (h->extra_slots == NULL)
        goto fail_free;
    h->slots[0] = d->scratch;
    for (i = 1; i < ISN_RING_SLOTS; i++)
        h->slots[i] = h->extra_slots + ISN_SLOT_SIZE * (i - 1);
    h->in_hash = d->in_hash;
    h->out_hash = d->out_hash;
    if (pthread_mutex_init(&h->lock, NULL) != 0)
        goto fail_free;
    if (pthread_cond_init(&h->wake, NULL) != 0)
        goto fail_mutex;
    if (pthread_cond_init(&h->done, NULL) != 0)
        goto fail_wake;
    /* The hasher takes no signals: the process's handlers run elsewhere. */
    sigfillset(&all);
    if (pthread_sigmask(SIG_SETMASK, &all, &old) != 0)
        goto fail_done;
    started = pthread_create(&h->thread, NULL, hasher_main, h) == 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!started)
        goto fail_done;
    /* Seen in top -H, perf and /proc (the tests count it by name); named
     * here rather than by the thread, so that it is named once this returns. */
    pthread_setname_np(h->thread, ISN_HASHER_THREAD_NAME);
    d->hasher = h;
    d->hasher_started = 1;
    return;
fail_done:
    pthread_cond_destroy(&h->done);
fail_wake:
    pthread_cond_destroy(&h->wake);
fail_mutex:
    pthread_mutex_destroy(&h->lock);
fail_free:
    free(h->extra_slots);
    free(h);
fail:
    d->thread_failed = 1;
}

/* Account for n produced bytes: enforce the size limit and hash them (unless
 * the hasher thread will, or the stream is plain: then the output is the
 * input, hashed once). */
static int decoder_emit(isn_decoder *d, const unsigned char *data, size_t n)
{
    if (n == 0)
        return ISN_OK;
    if (d->max_out != 0 && n > d->max_out - d->out_size) {
        char what[ISN_MSG_SIZE];
        snprintf(what, sizeof(what),
                 "uncompressed data exceeds the limit of %llu bytes",
                 (unsigned long long)d->max_out);
        return decoder_fail(d, ISN_ERR_LIMIT, what);
    }
    d->out_size += n;
    if (d->ring_output || d->format == ISN_FORMAT_PLAIN)
        return ISN_OK;
    if (sha256_ctx_update(d->out_hash, data, n) != ISN_OK)
        return decoder_fail(d, ISN_ERR_INTERNAL, "SHA-256 update failed");
    return ISN_OK;
}

/* Run the inflater on in[0..len) into out; hashes what it produces. */
static int decoder_inflate(isn_decoder *d, const unsigned char *in, size_t len,
                           unsigned char *out, size_t out_cap, struct step *st)
{
    char why[ISN_MSG_SIZE - 64];
    int rc = inflater_step(&d->engine, in, len, out, out_cap, st, why, sizeof(why));
    if (rc == ISN_ERR_CORRUPT) {
        char what[ISN_MSG_SIZE];
        snprintf(what, sizeof(what), "corrupt gzip data in member %llu: %s",
                 (unsigned long long)d->members, why);
        return decoder_fail(d, rc, what);
    }
    if (rc != ISN_OK)
        return decoder_fail(d, rc, isn_strerror(rc));
    rc = decoder_emit(d, out, st->produced);
    if (rc != ISN_OK)
        return rc;
    if (st->member_end) {
        d->in_member = 0;
        d->between_members = 1;
    }
    return ISN_OK;
}

/* Begin a gzip member whose first bytes are held in head. */
static int decoder_start_member(isn_decoder *d)
{
    /* The held bytes are header bytes: they produce no output, so a small
     * buffer of our own will do (the scratch may be a slot being hashed). */
    unsigned char none[ISN_MIN_OUT];
    struct step st;
    int rc;
    if (!d->engine_ready) {
        rc = inflater_init(&d->engine);
        if (rc != ISN_OK)
            return decoder_fail(d, rc, isn_strerror(rc));
        d->engine_ready = 1;
    } else {
        rc = inflater_reset(&d->engine);
        if (rc != ISN_OK)
            return decoder_fail(d, rc, isn_strerror(rc));
    }
    d->members++;
    d->in_member = 1;
    d->between_members = 0;
    rc = decoder_inflate(d, d->head, d->head_len, none, sizeof(none), &st);
    if (rc == ISN_OK && (st.consumed != d->head_len || st.produced != 0))
        return decoder_fail(d, ISN_ERR_INTERNAL, "inflater did not take the header bytes");
    d->head_len = 0;
    return rc;
}

/* With the held bytes decide what the stream (or the next member) is.
 * at_end: no more input will come. Returns ISN_OK when still undecided. */
static int decoder_decide(isn_decoder *d, int at_end)
{
    char what[ISN_MSG_SIZE];
    if (d->format == ISN_FORMAT_UNKNOWN) {
        if (d->head_len >= 2 && memcmp(d->head, GZIP_MAGIC, 2) == 0) {
            d->format = ISN_FORMAT_GZIP;
            return decoder_start_member(d);
        }
        if (d->head_len < sizeof(d->head) && !at_end)
            return ISN_OK; /* could still be zstd's 4-byte magic */
        if (d->head_len == 4 && memcmp(d->head, ZSTD_MAGIC, 4) == 0)
            return decoder_fail(d, ISN_ERR_UNSUPPORTED,
                                "zstd-compressed data cannot be decoded by this build");
        /* Not compressed: the bytes pass through unchanged; the held ones
         * are emitted first by decoder_feed or finish. */
        d->format = ISN_FORMAT_PLAIN;
        return ISN_OK;
    }
    /* Between gzip members: only another member may follow. */
    if (d->head_len >= 1 && d->head[0] != GZIP_MAGIC[0]) {
        snprintf(what, sizeof(what),
                 "unexpected data after gzip member %llu at offset %llu (byte 0x%02x)",
                 (unsigned long long)d->members,
                 (unsigned long long)(d->in_size - d->head_len), d->head[0]);
        return decoder_fail(d, ISN_ERR_TRAILING, what);
    }
    if (d->head_len >= 2) {
        if (d->head[1] != GZIP_MAGIC[1]) {
            snprintf(what, sizeof(what),
                     "unexpected data after gzip member %llu at offset %llu",
                     (unsigned long long)d->members,
                     (unsigned long long)(d->in_size - d->head_len));
            return decoder_fail(d, ISN_ERR_TRAILING, what);
        }
        return decoder_start_member(d);
    }
    if (at_end && d->head_len > 0) {
        snprintf(what, sizeof(what), "a stray byte after gzip member %llu",
                 (unsigned long long)d->members);
        return decoder_fail(d, ISN_ERR_TRAILING, what);
    }
    return ISN_OK;
}

/* One pass over in: returns after consuming all input, or when out is full. */
static int decoder_feed(isn_decoder *d, const unsigned char *in, size_t in_len,
                        size_t *in_used, unsigned char *out, size_t out_cap,
                        size_t *out_len, int digest_only)
{
    struct hasher *ring = d->ring_output ? d->hasher : NULL;
    size_t used = 0, written = 0;
    int rc = ISN_OK;

    while (rc == ISN_OK) {
        unsigned char *dst;
        size_t room;
        size_t left = in_len - used;

        if (ring != NULL) {
            dst = ring->slots[ring->fill] + ring->fill_len;
            room = ISN_SLOT_SIZE - ring->fill_len;
        } else if (digest_only) {
            dst = d->scratch;
            room = ISN_SCRATCH_SIZE;
        } else {
            dst = out + written;
            room = out_cap - written;
        }
        if (!digest_only && room == 0)
            break;
        if (d->format == ISN_FORMAT_PLAIN && d->head_len > 0) {
            /* out_cap >= ISN_MIN_OUT, so the held bytes fit on the first pass. */
            if (!digest_only)
                memcpy(dst, d->head, d->head_len);
            written += digest_only ? 0 : d->head_len;
            rc = decoder_emit(d, d->head, d->head_len);
            d->head_len = 0;
        } else if (d->format == ISN_FORMAT_PLAIN) {
            size_t n = digest_only || left < room ? left : room;
            if (n == 0)
                break;
            if (!digest_only)
                memcpy(dst, in + used, n);
            rc = decoder_emit(d, in + used, n);
            used += n;
            d->in_size += n;
            written += digest_only ? 0 : n;
            if (used == in_len)
                break;
        } else if (d->format == ISN_FORMAT_UNKNOWN || d->between_members) {
            if (left == 0)
                break;
            d->head[d->head_len++] = in[used++];
            d->in_size++;
            rc = decoder_decide(d, 0);
        } else {
            struct step st;
            rc = decoder_inflate(d, in + used, left, dst, room, &st);
            if (rc != ISN_OK)
                break;
            used += st.consumed;
            d->in_size += st.consumed;
            written += digest_only ? 0 : st.produced;
            if (ring != NULL) {
                ring->fill_len += st.produced;
                if (ring->fill_len == ISN_SLOT_SIZE)
                    hasher_publish(ring);
            }
            /* Done when the input is used and the output buffer was not
             * filled (so nothing is left pending inside the inflater). */
            if (used == in_len && st.produced < room && !st.member_end)
                break;
            if (st.consumed == 0 && st.produced == 0 && !st.member_end)
                rc = decoder_fail(d, ISN_ERR_INTERNAL, "inflater made no progress");
        }
    }
    *in_used = used;
    *out_len = written;
    return rc;
}

/* Whether the stream is (or, by its first bytes, will be) gzip. */
static int decoder_expects_gzip(const isn_decoder *d, const unsigned char *in, size_t in_len)
{
    unsigned char first[2];
    size_t n = 0, i;
    if (d->format != ISN_FORMAT_UNKNOWN)
        return d->format == ISN_FORMAT_GZIP;
    for (i = 0; i < d->head_len && n < sizeof(first); i++)
        first[n++] = d->head[i];
    for (i = 0; i < in_len && n < sizeof(first); i++)
        first[n++] = in[i];
    return n == sizeof(first) && memcmp(first, GZIP_MAGIC, sizeof(first)) == 0;
}

/* Whether this digest-only update should start the hasher thread. */
static int decoder_wants_hasher(const isn_decoder *d, const unsigned char *in, size_t in_len)
{
    if (d->hasher != NULL || d->thread_failed || d->threads_mode == ISN_THREADS_ONE)
        return 0;
    if (d->threads_mode == ISN_THREADS_TWO)
        return 1;
    /* A plain stream is hashed once, on whichever thread: no gain. */
    return d->in_size + in_len >= ISN_THREAD_AFTER && decoder_expects_gzip(d, in, in_len);
}

int isn_decoder_update(isn_decoder *d, const unsigned char *in, size_t in_len,
                       size_t *in_used, unsigned char *out, size_t out_cap,
                       size_t *out_len)
{
    int rc;
    size_t used = 0, written = 0;
    if (d == NULL || in_used == NULL || out_len == NULL || (in == NULL && in_len > 0))
        return ISN_ERR_ARGUMENT;
    *in_used = 0;
    *out_len = 0;
    if (d->status != ISN_OK)
        return d->status;
    if (d->finished) {
        snprintf(d->msg, sizeof(d->msg), "update after finish");
        return ISN_ERR_STATE;
    }
    if (out != NULL && out_cap < ISN_MIN_OUT) {
        snprintf(d->msg, sizeof(d->msg), "output buffer smaller than %d bytes", ISN_MIN_OUT);
        return ISN_ERR_ARGUMENT;
    }
    d->updated = 1;
    if (out == NULL && decoder_wants_hasher(d, in, in_len))
        decoder_start_hasher(d);
    if (d->hasher != NULL && out == NULL) {
        d->ring_output = 1;
        hasher_lend_input(d->hasher, in, in_len, d->sink);
    } else if (d->hasher != NULL) {
        hasher_drain(d->hasher); /* an update with output hashes on this thread */
    }
    rc = decoder_feed(d, in, in_len, &used, out, out_cap, &written, out == NULL);
    if (d->ring_output) {
        /* The hasher hashes all the input: in digest-only mode an update
         * consumes all of it unless it fails, and a failure is sticky. */
        d->ring_output = 0;
        hasher_take_back_input(d->hasher);
        if (d->hasher->failed && rc == ISN_OK)
            rc = decoder_fail(d, ISN_ERR_INTERNAL, "SHA-256 update failed");
        if (d->hasher->sink_errno != 0 && rc == ISN_OK)
            rc = decoder_sink_failed(d, d->hasher->sink_errno);
    } else {
        /* Hash (and sink) exactly the input consumed, once, whatever
         * happened after. */
        int err = d->sink >= 0 ? write_all(d->sink, in, used) : 0;
        if (sha256_ctx_update(d->in_hash, in, used) != ISN_OK && rc == ISN_OK)
            rc = decoder_fail(d, ISN_ERR_INTERNAL, "SHA-256 update failed");
        if (err != 0 && rc == ISN_OK)
            rc = decoder_sink_failed(d, err);
    }
    *in_used = used;
    *out_len = written;
    return rc;
}

int isn_decoder_finish(isn_decoder *d, unsigned char *out, size_t out_cap,
                       size_t *out_len, struct isn_result *result)
{
    int rc;
    size_t used = 0;
    if (d == NULL || result == NULL || out_len == NULL)
        return ISN_ERR_ARGUMENT;
    *out_len = 0;
    if (out != NULL && out_cap < ISN_MIN_OUT)
        return ISN_ERR_ARGUMENT;
    if (d->status != ISN_OK)
        return d->status;
    if (d->finished) {
        snprintf(d->msg, sizeof(d->msg), "finish called twice");
        return ISN_ERR_STATE;
    }
    d->finished = 1;
    if (d->hasher != NULL) {
        int failed;
        hasher_drain(d->hasher);
        failed = d->hasher->failed;
        hasher_end(d->hasher);
        d->hasher = NULL;
        if (failed)
            return decoder_fail(d, ISN_ERR_INTERNAL, "SHA-256 update failed");
    }
    rc = decoder_decide(d, 1);
    if (rc == ISN_OK && d->format == ISN_FORMAT_PLAIN) /* flush held bytes */
        rc = decoder_feed(d, NULL, 0, &used, out, out_cap, out_len, out == NULL);
    if (rc != ISN_OK)
        return rc;
    if (d->in_member) {
        char what[ISN_MSG_SIZE];
        snprintf(what, sizeof(what),
                 "gzip data ends inside member %llu after %llu bytes",
                 (unsigned long long)d->members, (unsigned long long)d->in_size);
        return decoder_fail(d, ISN_ERR_TRUNCATED, what);
    }
    memset(result, 0, sizeof(*result));
    if (sha256_ctx_final(d->in_hash, result->in_sha256) != ISN_OK)
        return decoder_fail(d, ISN_ERR_INTERNAL, "SHA-256 final failed");
    if (d->format == ISN_FORMAT_PLAIN) /* the output is the input */
        memcpy(result->out_sha256, result->in_sha256, sizeof(result->out_sha256));
    else if (sha256_ctx_final(d->out_hash, result->out_sha256) != ISN_OK)
        return decoder_fail(d, ISN_ERR_INTERNAL, "SHA-256 final failed");
    result->in_size = d->in_size;
    result->out_size = d->out_size;
    result->format = d->format;
    return ISN_OK;
}

/* ---- encoder ------------------------------------------------------------- */

struct isn_encoder {
    EVP_MD_CTX *in_hash;
    EVP_MD_CTX *out_hash;
    uint64_t in_size;
    uint64_t out_size;
    int status;
    int finishing;
    int finished;
#ifdef ISN_HAVE_ISAL
    struct isal_zstream stream;
    unsigned char *level_buf;
#else
    z_stream z;
    int z_ready;
#endif
    char msg[ISN_MSG_SIZE];
};

static int encoder_fail(isn_encoder *e, int status, const char *what)
{
    e->status = status;
    snprintf(e->msg, sizeof(e->msg), "%s", what);
    return status;
}

int isn_encoder_new(isn_encoder **out, int level)
{
    isn_encoder *e;
    if (out == NULL)
        return ISN_ERR_ARGUMENT;
    *out = NULL;
#ifdef ISN_HAVE_ISAL
    if (level < ISAL_DEF_MIN_LEVEL || level > ISAL_DEF_MAX_LEVEL)
        return ISN_ERR_ARGUMENT;
#else
    if (level < 0 || level > 9)
        return ISN_ERR_ARGUMENT;
#endif
    e = calloc(1, sizeof(*e));
    if (e == NULL)
        return ISN_ERR_NOMEM;
    e->in_hash = sha256_ctx_new();
    e->out_hash = sha256_ctx_new();
    if (e->in_hash == NULL || e->out_hash == NULL) {
        isn_encoder_free(e);
        return ISN_ERR_NOMEM;
    }
#ifdef ISN_HAVE_ISAL
    {
        static const uint32_t level_buf_sizes[4] = {
            ISAL_DEF_LVL0_DEFAULT, ISAL_DEF_LVL1_DEFAULT,
            ISAL_DEF_LVL2_DEFAULT, ISAL_DEF_LVL3_DEFAULT};
        uint32_t size = level_buf_sizes[level];
        isal_deflate_init(&e->stream);
        e->stream.gzip_flag = IGZIP_GZIP;
        e->stream.level = (uint32_t)level;
        e->stream.flush = NO_FLUSH;
        if (size > 0) {
            e->level_buf = malloc(size);
            if (e->level_buf == NULL) {
                isn_encoder_free(e);
                return ISN_ERR_NOMEM;
            }
            e->stream.level_buf = e->level_buf;
            e->stream.level_buf_size = size;
        }
    }
#else
    if (deflateInit2(&e->z, level, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
        isn_encoder_free(e);
        return ISN_ERR_NOMEM;
    }
    e->z_ready = 1;
#endif
    *out = e;
    return ISN_OK;
}

void isn_encoder_free(isn_encoder *e)
{
    if (e == NULL)
        return;
#ifdef ISN_HAVE_ISAL
    free(e->level_buf);
#else
    if (e->z_ready)
        deflateEnd(&e->z);
#endif
    EVP_MD_CTX_free(e->in_hash);
    EVP_MD_CTX_free(e->out_hash);
    free(e);
}

const char *isn_encoder_message(const isn_encoder *e)
{
    return e == NULL ? "no encoder" : e->msg;
}

/* One deflate call; end: flush and close the stream. */
static int encoder_step(isn_encoder *e, const unsigned char *in, size_t in_len,
                        unsigned char *out, size_t out_cap, int end, struct step *st)
{
    if (in_len > ISN_MAX_SLICE)
        in_len = ISN_MAX_SLICE;
    if (out_cap > ISN_MAX_SLICE)
        out_cap = ISN_MAX_SLICE;
#ifdef ISN_HAVE_ISAL
    {
        int ret;
        e->stream.next_in = (uint8_t *)(uintptr_t)in;
        e->stream.avail_in = (uint32_t)in_len;
        e->stream.next_out = out;
        e->stream.avail_out = (uint32_t)out_cap;
        e->stream.end_of_stream = end ? 1 : 0;
        ret = isal_deflate(&e->stream);
        clear_upper_vector_state();
        st->consumed = in_len - e->stream.avail_in;
        st->produced = out_cap - e->stream.avail_out;
        st->member_end = e->stream.internal_state.state == ZSTATE_END;
        if (ret != COMP_OK) {
            char what[64];
            snprintf(what, sizeof(what), "igzip deflate failed (error %d)", ret);
            return encoder_fail(e, ISN_ERR_INTERNAL, what);
        }
    }
#else
    {
        int ret;
        e->z.next_in = (Bytef *)(uintptr_t)in;
        e->z.avail_in = (uInt)in_len;
        e->z.next_out = out;
        e->z.avail_out = (uInt)out_cap;
        ret = deflate(&e->z, end ? Z_FINISH : Z_NO_FLUSH);
        st->consumed = in_len - e->z.avail_in;
        st->produced = out_cap - e->z.avail_out;
        st->member_end = ret == Z_STREAM_END;
        if (ret != Z_OK && ret != Z_STREAM_END && ret != Z_BUF_ERROR)
            return encoder_fail(e, ISN_ERR_INTERNAL, "zlib deflate failed");
    }
#endif
    if (sha256_ctx_update(e->in_hash, in, st->consumed) != ISN_OK ||
        sha256_ctx_update(e->out_hash, out, st->produced) != ISN_OK)
        return encoder_fail(e, ISN_ERR_INTERNAL, "SHA-256 update failed");
    e->in_size += st->consumed;
    e->out_size += st->produced;
    return ISN_OK;
}

static int encoder_check(isn_encoder *e, unsigned char *out, size_t out_cap,
                         size_t *out_len)
{
    if (e == NULL || out == NULL || out_len == NULL)
        return ISN_ERR_ARGUMENT;
    *out_len = 0;
    if (e->status != ISN_OK)
        return e->status;
    if (e->finished) {
        snprintf(e->msg, sizeof(e->msg), "encoder already finished");
        return ISN_ERR_STATE;
    }
    if (out_cap < ISN_MIN_OUT) {
        snprintf(e->msg, sizeof(e->msg), "output buffer smaller than %d bytes", ISN_MIN_OUT);
        return ISN_ERR_ARGUMENT;
    }
    return ISN_OK;
}

int isn_encoder_update(isn_encoder *e, const unsigned char *in, size_t in_len,
                       size_t *in_used, unsigned char *out, size_t out_cap,
                       size_t *out_len)
{
    size_t used = 0, written = 0;
    int rc;
    if (in_used == NULL || (in == NULL && in_len > 0))
        return ISN_ERR_ARGUMENT;
    *in_used = 0;
    rc = encoder_check(e, out, out_cap, out_len);
    if (rc != ISN_OK)
        return rc;
    if (e->finishing) {
        snprintf(e->msg, sizeof(e->msg), "update after finish");
        return ISN_ERR_STATE;
    }
    while (used < in_len && written < out_cap) {
        struct step st;
        rc = encoder_step(e, in + used, in_len - used, out + written, out_cap - written, 0, &st);
        if (rc != ISN_OK)
            break;
        used += st.consumed;
        written += st.produced;
        if (st.consumed == 0 && st.produced == 0)
            break;
    }
    *in_used = used;
    *out_len = written;
    return rc;
}

int isn_encoder_finish(isn_encoder *e, unsigned char *out, size_t out_cap,
                       size_t *out_len, int *done, struct isn_result *result)
{
    size_t written = 0;
    int rc;
    if (done == NULL || result == NULL)
        return ISN_ERR_ARGUMENT;
    *done = 0;
    rc = encoder_check(e, out, out_cap, out_len);
    if (rc != ISN_OK)
        return rc;
    e->finishing = 1;
    while (written < out_cap) {
        struct step st;
        rc = encoder_step(e, NULL, 0, out + written, out_cap - written, 1, &st);
        if (rc != ISN_OK)
            return rc;
        written += st.produced;
        if (st.member_end) {
            e->finished = 1;
            break;
        }
        if (st.produced == 0)
            break;
    }
    *out_len = written;
    if (!e->finished)
        return ISN_OK;
    memset(result, 0, sizeof(*result));
    if (sha256_ctx_final(e->in_hash, result->in_sha256) != ISN_OK ||
        sha256_ctx_final(e->out_hash, result->out_sha256) != ISN_OK)
        return encoder_fail(e, ISN_ERR_INTERNAL, "SHA-256 final failed");
    result->in_size = e->in_size;
    result->out_size = e->out_size;
    result->format = ISN_FORMAT_GZIP;
    *done = 1;
    return ISN_OK;
}
