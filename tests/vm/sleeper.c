/* sleeper: do nothing until a signal ends it. The VM tier also installs it as
 * /bin/vmtarget, a workload with a name of its own for discovery to match (a
 * copy of busybox would not do: busybox picks its applet from argv[0]). */
#include <unistd.h>

int main(void)
{
	for (;;)
		pause();
}
