// SPDX-License-Identifier: GPL-2.0

#include <linux/io.h>
#include <linux/mm.h>

unsigned long rust_helper_get_mm_rss(struct mm_struct *mm)
{
	return get_mm_rss(mm);
}

phys_addr_t rust_helper_virt_to_phys(void *address)
{
	return virt_to_phys(address);
}
