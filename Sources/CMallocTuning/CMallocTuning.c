// The header's inline function is the whole target; SwiftPM wants one source file.
#include "CMallocTuning.h"
