/* imagestore native core: streaming SHA-256 + gzip in one pass.
 *
 * This header is also the cffi cdef, so it holds plain declarations only:
 * no preprocessor lines, no macros. Include <stddef.h> and <stdint.h> first.
 *
 * Every function returns ISN_OK or a negative ISN_ERR_* code; the handle's
 * message function then says what went wrong, in one line. Nothing here
 * aborts, prints or keeps global state. Handles are not thread-safe: use one
 * handle per thread (the Python layer refuses concurrent use). A decoder may
 * run one helper thread of its own (see isn_decoder_set_threads); it is
 * started and joined inside the decoder's calls, never seen by the caller.
 */

enum isn_status {
    ISN_OK = 0,
    ISN_ERR_NOMEM = -1,       /* an allocation failed */
    ISN_ERR_CORRUPT = -2,     /* input is not valid gzip / deflate data */
    ISN_ERR_TRUNCATED = -3,   /* input ended inside a gzip member */
    ISN_ERR_TRAILING = -4,    /* bytes after the last gzip member are not gzip */
    ISN_ERR_LIMIT = -5,       /* output grew past the handle's limit */
    ISN_ERR_UNSUPPORTED = -6, /* a compression this build does not decode */
    ISN_ERR_STATE = -7,       /* call not allowed now (e.g. update after finish) */
    ISN_ERR_ARGUMENT = -8,    /* a bad argument (e.g. level out of range) */
    ISN_ERR_INTERNAL = -9,    /* a library call failed unexpectedly */
    ISN_ERR_IO = -10          /* a write to the decoder's sink failed */
};

enum isn_format {
    ISN_FORMAT_UNKNOWN = 0, /* not enough input seen yet */
    ISN_FORMAT_PLAIN = 1,   /* uncompressed bytes (e.g. a plain tar) */
    ISN_FORMAT_GZIP = 2
};

/* Digests and sizes of both sides of a stream, filled by *_finish. "in" is
 * what the caller fed; "out" is what the handle produced. */
struct isn_result {
    unsigned char in_sha256[32];
    uint64_t in_size;
    unsigned char out_sha256[32];
    uint64_t out_size;
    int format;
};

/* How many threads a decoder may use in digest-only mode. */
enum isn_threads {
    ISN_THREADS_AUTO = 0, /* a hasher thread once the stream is large (default) */
    ISN_THREADS_ONE = 1,  /* the caller's thread only */
    ISN_THREADS_TWO = 2   /* a hasher thread from the first byte (tests, benches) */
};

typedef struct isn_sha256 isn_sha256;
typedef struct isn_decoder isn_decoder;
typedef struct isn_encoder isn_encoder;

/* "isa-l" or "zlib": the gzip library this build uses. */
const char *isn_gzip_backend(void);
/* A fixed description of a status code. */
const char *isn_strerror(int status);

/* Ask the kernel to start writing fd's dirty pages to disk, without waiting
 * for them (Linux: sync_file_range SYNC_FILE_RANGE_WRITE; elsewhere nothing).
 * 0, or the errno. A head start for the fsync that follows, not a substitute. */
int isn_start_writeback(int fd);

/* Allocate fd's disk blocks for [offset, offset + length), the file's size
 * growing to the end of that range (Linux fallocate, mode 0; where the file
 * system or the system cannot, nothing). 0, or the errno (ENOSPC: the disk is
 * full). The writes that follow find their blocks already there. */
int isn_reserve(int fd, uint64_t offset, uint64_t length);

/* Plain streaming SHA-256 (OpenSSL EVP). */
int isn_sha256_new(isn_sha256 **out);
int isn_sha256_update(isn_sha256 *h, const unsigned char *data, size_t len);
int isn_sha256_finish(isn_sha256 *h, unsigned char digest[32], uint64_t *size);
void isn_sha256_free(isn_sha256 *h);

/* Decoder: fed gzip (single or multi-member) or plain bytes, detected from
 * the first bytes. It hashes what it is fed and what it inflates.
 * max_out: error ISN_ERR_LIMIT once more than this many bytes inflate
 * (0 = no limit); this is what stops a gzip bomb. */
int isn_decoder_new(isn_decoder **out, uint64_t max_out);
/* Choose the threading mode (enum isn_threads); only before the first
 * update, else ISN_ERR_STATE. In digest-only mode with two threads, the
 * caller's thread inflates into a bounded ring of output buffers and the
 * decoder's hasher thread hashes the input and the ring; results are the
 * same in every mode. If the thread cannot start, the decoder runs on one. */
int isn_decoder_set_threads(isn_decoder *d, int mode);
/* From the next update on, every byte fed is also written to fd (-1: to
 * nowhere), in order, by whichever thread hashes it, before the update
 * returns. A failed write fails the decoder with ISN_ERR_IO. */
int isn_decoder_set_sink(isn_decoder *d, int fd);
/* After ISN_ERR_IO: the errno of the write that failed (else 0). */
int isn_decoder_os_error(const isn_decoder *d);
/* 2 once the hasher thread has started in this stream, else 1. */
int isn_decoder_threads(const isn_decoder *d);
/* Feed input. With out == NULL (digest-only) all input is consumed and the
 * inflated bytes are hashed and dropped. Otherwise up to out_cap bytes are
 * written to out; *in_used says how much input was consumed, *out_len how
 * much was written. Call again with the rest until the input is used and
 * *out_len < out_cap. */
int isn_decoder_update(isn_decoder *d, const unsigned char *in, size_t in_len,
                       size_t *in_used, unsigned char *out, size_t out_cap,
                       size_t *out_len);
/* End of input: fails if the stream is truncated; fills *result. A short
 * plain stream's held-back bytes (< 16) are written to out (NULL when
 * digest-only), *out_len says how many. */
int isn_decoder_finish(isn_decoder *d, unsigned char *out, size_t out_cap,
                       size_t *out_len, struct isn_result *result);
/* Bytes fed and produced so far. */
void isn_decoder_sizes(const isn_decoder *d, uint64_t *in_size, uint64_t *out_size);
const char *isn_decoder_message(const isn_decoder *d);
void isn_decoder_free(isn_decoder *d);

/* Encoder: fed uncompressed bytes, emits one gzip member (mtime 0). */
int isn_encoder_new(isn_encoder **out, int level);
/* Consume input while there is room in out; call again with the rest. */
int isn_encoder_update(isn_encoder *e, const unsigned char *in, size_t in_len,
                       size_t *in_used, unsigned char *out, size_t out_cap,
                       size_t *out_len);
/* Flush the end of the stream into out; call until *done is 1, then
 * *result holds both digests. */
int isn_encoder_finish(isn_encoder *e, unsigned char *out, size_t out_cap,
                       size_t *out_len, int *done, struct isn_result *result);
const char *isn_encoder_message(const isn_encoder *e);
void isn_encoder_free(isn_encoder *e);
