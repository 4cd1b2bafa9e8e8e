/* burn: spin on one CPU until killed, without forking or sleeping, so that
 * every microsecond the scheduler grants shows up in cpu.stat. */
int main(void)
{
	volatile unsigned long n = 0;

	for (;;)
		n++;
}
