// Child processes for end-to-end tests (core/subprocess.h): killed on scope exit, so a failing
// test never leaves servers behind.
#pragma once

#include "core/subprocess.h"

namespace tessera::testing {

using Subprocess = core::Subprocess;

}  // namespace tessera::testing
