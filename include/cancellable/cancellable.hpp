// Umbrella header: everything public in the cancellable library.
#pragma once

#include "cancellable/cancellable_base.hpp"
#include "cancellable/cancellable_completer.hpp"
#include "cancellable/cancellable_future.hpp"
#include "cancellable/cancellation_token.hpp"
#include "cancellable/exceptions.hpp"
#include "cancellable/executor.hpp"
#include "cancellable/future.hpp"
#include "cancellable/ignore_cancellation.hpp"
#include "cancellable/merged_cancellation_token.hpp"
#include "cancellable/signal_cancellation_token.hpp"
#include "cancellable/timeout_cancellation_token.hpp"
#include "cancellable/version.hpp"
#include "cancellable/crossing.hpp"
#include "cancellable/isolate.hpp"
#include "cancellable/isolate_errors.hpp"
#include "cancellable/isolate_options.hpp"
