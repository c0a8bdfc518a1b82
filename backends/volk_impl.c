/* volk_impl.c - volk's loader (libvulkan-volk-dev ships it as a header):
 * compiled here once, with the project's warnings off for its text. */
#define VOLK_IMPLEMENTATION
#include <volk.h>
