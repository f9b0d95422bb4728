/* The cell's native relay between sandbox sockets (docs/broker-protocol.md §2):
 * broker_relay.c. Plain C, no Python. */
#ifndef PYISOLATE_BROKER_RELAY_H
#define PYISOLATE_BROKER_RELAY_H

#include "noise.h"

/* Hands one sandbox link to the process's relay thread (started on first use): `sealed`
 * is the socket to the supervisor, `inner` the cell's end of the guest's socketpair, `t`
 * a finished transport whose state is copied (the caller wipes its own copy). On success
 * (0) the relay owns both descriptors and closes them when the link ends; on failure
 * (-errno) nothing was taken. */
int pyi_relay_add(int sealed, int inner, const pyi_transport *t);

#endif
