/* The parser from the Linux KCM documentation: Thrift framed transport, a 4-byte big-endian
 * length that does not count itself. */
#include "kcm_bpf.h"

SEC("socket_kcm")
int kcm_doc_parser(struct __sk_buff *skb)
{
	return load_word(skb, 0) + 4;
}

char _license[] SEC("license") = "GPL";
