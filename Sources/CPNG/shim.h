#ifndef QG_CPNG_SHIM_H
#define QG_CPNG_SHIM_H
#include <png.h>

// PNG_LIBPNG_VER_STRING is a string macro; Swift cannot import it.
static inline const char *qg_png_ver(void) { return PNG_LIBPNG_VER_STRING; }
#endif
