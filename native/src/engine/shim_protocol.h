// Forwarding header: the shim protocol moved to shimproto/protocol.h (shared by engine/ and shim/). Only
// engine/engine.cc still includes this path; remove it once engine.cc includes "shimproto/protocol.h".
#pragma once

#include "shimproto/protocol.h"
