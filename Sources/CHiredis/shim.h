#ifndef TOLLGATE_CHIREDIS_SHIM_H
#define TOLLGATE_CHIREDIS_SHIM_H
// hiredis' pure parts only: command formatting and the RESP reader. No blocking I/O is used.
#include <hiredis/hiredis.h>
#include <hiredis/read.h>
#endif
