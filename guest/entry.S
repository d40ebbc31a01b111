/*
 * PVH entry of the tiny guest.
 *
 * A PVH loader (our VMM, QEMU, Firecracker, Cloud Hypervisor) finds the
 * XEN_ELFNOTE_PHYS32_ENTRY note and starts us in 32-bit protected mode with
 * paging off and %ebx = guest-physical address of struct hvm_start_info.
 * We build a first identity map of the low 1 GiB (2 MiB pages, user-accessible
 * so ring 3 can use it), enable long mode and call boot_main() in C, which maps
 * the rest of RAM, sets up TSS and IDT, and drops to ring 3.
 */
#define XEN_ELFNOTE_PHYS32_ENTRY 18
#define MSR_EFER 0xc0000080

/* The kernel data selector in every data segment register. */
.macro LOAD_DATA_SEGMENTS
	movw $0x10, %ax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %ss
	movw %ax, %fs
	movw %ax, %gs
.endm

	.section .note.Xen, "a"
	.p2align 2
	.long 4                      /* namesz: "Xen\0" */
	.long 8                      /* descsz: 64-bit ELF loaders read 8 bytes */
	.long XEN_ELFNOTE_PHYS32_ENTRY
	.asciz "Xen"
	.p2align 2
	.quad pvh_start32

	.section .text.entry, "ax"
	.code32
	.globl pvh_start32
pvh_start32:
	cli
	cld
	movl %ebx, pvh_start_info_paddr
	movl $boot_stack_top, %esp

	/* PML4[0] -> PDPT, PDPT[0] -> PD0; flags P|RW|US = 7. */
	movl $pdpt, %eax
	orl $7, %eax
	movl %eax, pml4
	movl $page_dirs, %eax
	orl $7, %eax
	movl %eax, pdpt

	/* PD0[i] = i * 2 MiB | P|RW|US|PS (0x87): the low 1 GiB. */
	movl $page_dirs, %edi
	movl $0x87, %eax
	movl $512, %ecx
1:	movl %eax, (%edi)
	movl $0, 4(%edi)
	addl $0x200000, %eax
	addl $8, %edi
	loop 1b

	movl $pml4, %eax
	movl %eax, %cr3
	movl %cr4, %eax
	orl $0x20, %eax              /* PAE */
	movl %eax, %cr4
	movl $MSR_EFER, %ecx
	rdmsr
	orl $0x100, %eax             /* LME */
	wrmsr
	movl %cr0, %eax
	orl $0x80000001, %eax        /* PG | PE */
	movl %eax, %cr0

	lgdt gdt64_ptr
	ljmp $0x08, $long_mode_entry

	.code64
long_mode_entry:
	LOAD_DATA_SEGMENTS
	movabsq $boot_stack_top, %rsp
	call boot_main
2:	hlt
	jmp 2b

/* void enter_user(uint64_t rip, uint64_t rsp, uint64_t arg): iretq to ring 3
 * with IOPL 3, IF 0, calling rip(arg). */
	.text
	.globl enter_user
enter_user:
	movq %rdi, %rcx
	movq %rdx, %rdi
	movw $0x1b, %ax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %fs
	movw %ax, %gs
	pushq $0x1b
	pushq %rsi
	pushq $0x3002
	pushq $0x23
	pushq %rcx
	iretq

/*
 * Application processors. The boot CPU copies ap_trampoline to
 * AP_TRAMPOLINE (smp.c) and sends INIT, SIPI, SIPI with vector
 * AP_TRAMPOLINE >> 12: each AP starts there in real mode with
 * CS = AP_TRAMPOLINE >> 4, IP = 0. It goes straight to long mode (PAE,
 * the boot CPU's page tables, EFER.LME, then PE and PG together), takes the
 * next AP number and its stack, and calls ap_main(number) in C.
 */
	.section .rodata
	.code16
	.globl ap_trampoline, ap_trampoline_end
ap_trampoline:
	cli
	cld
	movl %cr4, %eax
	orl $0x20, %eax              /* PAE */
	movl %eax, %cr4
	movl $pml4, %eax
	movl %eax, %cr3
	movl $MSR_EFER, %ecx
	rdmsr
	orl $0x100, %eax             /* LME */
	wrmsr
	lgdtl %cs:(ap_gdt_ptr - ap_trampoline)
	movl %cr0, %eax
	orl $0x80000001, %eax        /* PG | PE */
	movl %eax, %cr0
	ljmpl $0x08, $ap_long_entry
	.p2align 2
ap_gdt_ptr:
	.word gdt64_end - gdt64 - 1
	.long gdt64
ap_trampoline_end:

	.text
	.code64
ap_long_entry:
	LOAD_DATA_SEGMENTS
	movl $1, %edi
	lock xaddl %edi, ap_next     /* %edi = this AP's CPU number, 1.. */
	movq %rdi, %rax
	shlq $13, %rax               /* AP_STACK_BYTES = 8 KiB each */
	leaq ap_stacks(%rip), %rsp
	addq %rax, %rsp              /* the top of stack %edi - 1 is the base of stack %edi */
	call ap_main
4:	hlt
	jmp 4b

/* Exception stubs: normalise the frame (push 0 where the CPU pushes no error
 * code), then call exception_handler(vector, frame). */
.macro EXC_NOERR n
	.globl exc_stub_\n
exc_stub_\n:
	pushq $0
	pushq $\n
	jmp exc_common
.endm
.macro EXC_ERR n
	.globl exc_stub_\n
exc_stub_\n:
	pushq $\n
	jmp exc_common
.endm

EXC_NOERR 0
EXC_NOERR 1
EXC_NOERR 2
EXC_NOERR 3
EXC_NOERR 4
EXC_NOERR 5
EXC_NOERR 6
EXC_NOERR 7
EXC_ERR   8
EXC_NOERR 9
EXC_ERR   10
EXC_ERR   11
EXC_ERR   12
EXC_ERR   13
EXC_ERR   14
EXC_NOERR 15
EXC_NOERR 16
EXC_ERR   17
EXC_NOERR 18
EXC_NOERR 19
EXC_NOERR 20
EXC_ERR   21

exc_common:
	movw $0x10, %ax
	movw %ax, %ds
	movw %ax, %es
	movq %rsp, %rdi              /* points at {vector, error, rip, cs, rflags, rsp, ss} */
	andq $-16, %rsp
	call exception_handler
3:	hlt
	jmp 3b

	.section .rodata
	.globl exc_stub_table
	.p2align 3
exc_stub_table:
	.quad exc_stub_0, exc_stub_1, exc_stub_2, exc_stub_3, exc_stub_4, exc_stub_5
	.quad exc_stub_6, exc_stub_7, exc_stub_8, exc_stub_9, exc_stub_10, exc_stub_11
	.quad exc_stub_12, exc_stub_13, exc_stub_14, exc_stub_15, exc_stub_16, exc_stub_17
	.quad exc_stub_18, exc_stub_19, exc_stub_20, exc_stub_21

	.data
	.p2align 4
	.globl gdt64
gdt64:
	.quad 0                      /* 0x00 null */
	.quad 0x00af9a000000ffff     /* 0x08 kernel code, 64-bit */
	.quad 0x00cf92000000ffff     /* 0x10 kernel data */
	.quad 0x00cff2000000ffff     /* 0x18 user data, DPL 3 (selector 0x1b) */
	.quad 0x00affa000000ffff     /* 0x20 user code, 64-bit, DPL 3 (selector 0x23) */
	.rept 8                      /* 0x28 + 16 * cpu: each CPU's TSS, filled by tss_install() */
	.quad 0, 0
	.endr
gdt64_end:
gdt64_ptr:
	.word gdt64_end - gdt64 - 1
	.quad gdt64

	.bss
	.p2align 12
	.globl pml4, pdpt, page_dirs
pml4:	.skip 4096
pdpt:	.skip 4096
page_dirs:
	.skip 4096 * 64              /* identity map of up to 64 GiB */
	.p2align 4
	.skip 16384
boot_stack_top:
	.globl pvh_start_info_paddr
	.p2align 2
pvh_start_info_paddr:
	.skip 4
	.globl ap_stacks
	.p2align 4
ap_stacks:                       /* 8 KiB for each AP, 1..7 */
	.skip 8192 * 7

	.data
	.globl ap_next
	.p2align 2
ap_next:
	.long 1
