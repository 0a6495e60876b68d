/* Minimal declarations for kcm parser programs, so the corpus builds with clang alone
 * (no libbpf or kernel headers needed). The layout of struct __sk_buff is the kernel's UAPI
 * one; kcm provides only `len` (the length of the message view). */
#ifndef KCM_BPF_H
#define KCM_BPF_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;

struct __sk_buff {
	__u32 len;
	__u32 pkt_type;
	__u32 mark;
	/* ... more fields follow in the kernel's struct; kcm programs may read only `len`. */
};

#define SEC(name) __attribute__((section(name), used))

/* Legacy socket-filter absolute loads (LD_ABS): network byte order, and the program returns 0
 * when the read would run past the end of the data. */
unsigned long long load_byte(void *skb, unsigned long long off) asm("llvm.bpf.load.byte");
unsigned long long load_half(void *skb, unsigned long long off) asm("llvm.bpf.load.half");
unsigned long long load_word(void *skb, unsigned long long off) asm("llvm.bpf.load.word");

/* Helper 26: copies len bytes at offset into to; 0 on success, -EFAULT (and zeroes) if short. */
static long (*bpf_skb_load_bytes)(const void *skb, __u32 offset, void *to, __u32 len) = (void *)26;

#endif
