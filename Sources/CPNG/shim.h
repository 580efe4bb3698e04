#ifndef QG_CPNG_SHIM_H
#define QG_CPNG_SHIM_H
#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

// libpng's full writer reports errors by longjmp, which Swift cannot take: the setjmp lives here, and the
// Swift side sees a return value and a message. (The simplified API needs no setjmp, but takes one byte per
// pixel and no compression level: packing and deflating a QR's 150 000 pixels there cost twice this.)

/// What `qg_png_write_bilevel` wrote: `data` (malloc'ed; free it with `qg_png_output_free`) holds `size`
/// bytes; on failure `message` says why.
typedef struct {
    unsigned char *data;
    size_t size;
    size_t capacity;
    char message[128];
} qg_png_output;

static inline void qg_png_output_free(qg_png_output *out) {
    free(out->data);
    out->data = NULL;
    out->size = out->capacity = 0;
}

static inline void qg_png_on_error(png_structp png, png_const_charp message) {
    qg_png_output *out = (qg_png_output *)png_get_error_ptr(png);
    if (out && message) {
        strncpy(out->message, message, sizeof out->message - 1);
        out->message[sizeof out->message - 1] = 0;
    }
    png_longjmp(png, 1);
}

static inline void qg_png_on_warning(png_structp png, png_const_charp message) { (void)png; (void)message; }

static inline void qg_png_append(png_structp png, png_bytep bytes, size_t count) {
    qg_png_output *out = (qg_png_output *)png_get_io_ptr(png);
    if (count > out->capacity - out->size) {
        size_t capacity = out->capacity * 2 > out->size + count ? out->capacity * 2 : out->size + count;
        unsigned char *grown = (unsigned char *)realloc(out->data, capacity);
        if (!grown) png_error(png, "out of memory");
        out->data = grown;
        out->capacity = capacity;
    }
    memcpy(out->data + out->size, bytes, count);
    out->size += count;
}

static inline void qg_png_flush(png_structp png) { (void)png; }

/// A one-bit grayscale PNG (no row filters, zlib at `level`) of `height` rows of `row_bytes` each in `rows`,
/// pixels packed most significant bit first, 1 white. Returns 1 with the bytes in `out`, or 0 with `out->message`.
static inline int qg_png_write_bilevel(const unsigned char *rows, unsigned width, unsigned height, size_t row_bytes,
                                       int level, qg_png_output *out) {
    memset(out, 0, sizeof *out);
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, out, qg_png_on_error, qg_png_on_warning);
    if (!png) {
        strcpy(out->message, "libpng could not start a writer");
        return 0;
    }
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        strcpy(out->message, "libpng could not start a writer");
        return 0;
    }
    // `png` and `info` are not changed after this point, so they keep their values across the longjmp.
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        qg_png_output_free(out);
        if (!out->message[0]) strcpy(out->message, "libpng failed");
        return 0;
    }
    out->capacity = row_bytes * height / 8 + 1024; // a QR deflates to about a twentieth of its packed rows: room enough
    out->data = (unsigned char *)malloc(out->capacity);
    if (!out->data) png_error(png, "out of memory");
    png_set_write_fn(png, out, qg_png_append, qg_png_flush);
    png_set_IHDR(png, info, width, height, 1, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    png_set_filter(png, PNG_FILTER_TYPE_BASE, PNG_FILTER_NONE);
    png_set_compression_level(png, level);
    png_write_info(png, info);
    for (unsigned y = 0; y < height; y++) png_write_row(png, rows + (size_t)y * row_bytes);
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    return 1;
}
#endif
