#ifndef QG_CQRENCODE_SHIM_H
#define QG_CQRENCODE_SHIM_H
// qrencode.h imports as is; the shim exists so every C module has one entry point.
#include <qrencode.h>
#endif
