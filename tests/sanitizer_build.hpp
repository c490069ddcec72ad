// Whether this test was built with a sanitizer. The scale tests' server is
// built the same way: under a sanitizer RSS says nothing about the program
// (shadow memory, quarantine) and everything runs several times slower.
#pragma once

#if defined(__has_feature)
#define AGENTWS_HAS_FEATURE(feature) __has_feature(feature)
#else
#define AGENTWS_HAS_FEATURE(feature) 0
#endif

#if defined(__SANITIZE_THREAD__) || AGENTWS_HAS_FEATURE(thread_sanitizer)
#define AGENTWS_THREAD_SANITIZER 1
#else
#define AGENTWS_THREAD_SANITIZER 0
#endif
#if defined(__SANITIZE_ADDRESS__) || AGENTWS_HAS_FEATURE(address_sanitizer)
#define AGENTWS_ADDRESS_SANITIZER 1
#else
#define AGENTWS_ADDRESS_SANITIZER 0
#endif

namespace agentws::testing {

inline constexpr bool sanitized_build = AGENTWS_THREAD_SANITIZER || AGENTWS_ADDRESS_SANITIZER;

}  // namespace agentws::testing
