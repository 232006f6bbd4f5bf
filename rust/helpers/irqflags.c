// SPDX-License-Identifier: GPL-2.0

#include <linux/irqflags.h>

/* local_irq_save() is a macro that writes its argument. */
unsigned long rust_helper_local_irq_save_flags(void)
{
	unsigned long flags;

	local_irq_save(flags);
	return flags;
}

void rust_helper_local_irq_restore_flags(unsigned long flags)
{
	local_irq_restore(flags);
}
