#ifndef QG_CWEBSOCKETS_SHIM_H
#define QG_CWEBSOCKETS_SHIM_H
#include <libwebsockets.h>

// LWS_PRE is a macro; Swift cannot import it.
static inline int qg_lws_pre(void) { return LWS_PRE; }

// A timer whose callback can find its owner: lws hands back only the sul
// pointer, and lws_container_of is a macro.
typedef struct qg_timer {
    lws_sorted_usec_list_t sul;
    void *owner;
} qg_timer_t;

static inline void *qg_timer_owner(lws_sorted_usec_list_t *sul) {
    return lws_container_of(sul, qg_timer_t, sul)->owner;
}

// LWS_SET_TIMER_USEC_CANCEL is a macro.
static inline lws_usec_t qg_lws_timer_cancel(void) { return LWS_SET_TIMER_USEC_CANCEL; }
#endif
