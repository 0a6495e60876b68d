# DNS over TCP (u16 big-endian length + 2), written in assembly and assembled with
# `llvm-mc -triple bpfel -filetype=obj`. Its section is `socket`, so loaders find it through
# the socket* convention rather than the name socket_kcm.
	.section	socket,"ax",@progbits
	.globl	asm_dns_parser
	.type	asm_dns_parser,@function
asm_dns_parser:
	r6 = r1
	r0 = *(u16 *)skb[0]
	r0 += 2
	exit
.Lend:
	.size	asm_dns_parser, .Lend-asm_dns_parser
