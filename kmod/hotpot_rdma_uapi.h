/* SPDX-License-Identifier: (GPL-2.0 WITH Linux-syscall-note) OR MIT */
/*
 * /dev/hotpot-rdma: the user-space interface of hotpot_rdma.ko (see kmod/README.md).
 *
 * One open file is one session: bound to one RDMA device port, with its own protection domain, one completion
 * queue, its reliable-connected QPs and its memory regions. A peer connected to a QP of this session can READ
 * only the regions this session registered with HOTPOT_RDMA_ACCESS_REMOTE_READ, and never write them.
 * Remote addresses are offsets into the peer's region (every region's I/O virtual address starts at 0), so a
 * peer never learns this process's virtual addresses.
 *
 * Every struct is fixed-size, 8-byte aligned, with explicit reserved fields that must be zero.
 */
#ifndef HOTPOT_RDMA_UAPI_H
#define HOTPOT_RDMA_UAPI_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define HOTPOT_RDMA_ABI_VERSION 1
#define HOTPOT_RDMA_DEVICE_PATH "/dev/hotpot-rdma"
#define HOTPOT_RDMA_MAX_MSG 4096 /* largest SEND / RECV message, bytes */
#define HOTPOT_RDMA_NAME_LEN 64

/* HOTPOT_RDMA_IOC_BIND: choose the device and port every later call of this session uses. Once per session. */
struct hotpot_rdma_bind {
	char device[HOTPOT_RDMA_NAME_LEN]; /* in: IB device name ("" = the first RoCE device); out: the name */
	__u32 port;                        /* in: port number (0 = 1) */
	__u32 gid_index;                   /* in: local GID index used as source of every QP */
	__u8 gid[16];                      /* out: that GID (send it to peers) */
	__u32 mtu;                         /* out: active path MTU, bytes */
	__u32 abi_version;                 /* out: HOTPOT_RDMA_ABI_VERSION */
};

#define HOTPOT_RDMA_ACCESS_LOCAL_WRITE 0x1 /* may be the destination of a READ this session posts */
#define HOTPOT_RDMA_ACCESS_REMOTE_READ 0x2 /* connected peers may READ it */
#define HOTPOT_RDMA_ACCESS_ALL (HOTPOT_RDMA_ACCESS_LOCAL_WRITE | HOTPOT_RDMA_ACCESS_REMOTE_READ)

/*
 * HOTPOT_RDMA_IOC_REG_MR: pin [addr, addr + length) of this process and register it. addr and length are
 * page-aligned. fd >= 0: the range must lie in one shared mapping of that file (the page files of a pool);
 * fd == -1: any mapping of this process.
 */
struct hotpot_rdma_reg_mr {
	__u64 addr;
	__u64 length;
	__s32 fd;
	__u32 access; /* HOTPOT_RDMA_ACCESS_* */
	__u32 mr_id;  /* out: handle for POST_READ and DEREG_MR */
	__u32 rkey;   /* out: what a peer needs (with the length) to READ this region */
};

/* HOTPOT_RDMA_IOC_DEREG_MR, HOTPOT_RDMA_IOC_DESTROY_QP */
struct hotpot_rdma_handle {
	__u32 id;
	__u32 reserved;
};

/* HOTPOT_RDMA_IOC_CREATE_QP: an RC QP, ready to connect; all fields out. */
struct hotpot_rdma_create_qp {
	__u32 qp_id;
	__u32 qpn; /* send qpn and psn to the peer */
	__u32 psn;
	__u32 reserved;
};

/* HOTPOT_RDMA_IOC_CONNECT_QP: move the QP to RTS, connected to the peer's QP (values the peer sent). */
struct hotpot_rdma_connect {
	__u32 qp_id;
	__u32 remote_qpn;
	__u32 remote_psn;
	__u32 reserved;
	__u8 remote_gid[16];
	/* The peer's Ethernet address (RoCE); all zero = derived from a link-local remote_gid. */
	__u8 remote_mac[6];
	__u8 reserved2[2];
};

/*
 * HOTPOT_RDMA_IOC_POST_READ: one-sided RDMA READ of [remote_addr, remote_addr + length) of the peer's region
 * `rkey` into [local_offset, local_offset + length) of local region mr_id. Only the local range can be checked
 * here; the peer's device refuses a range outside its region (the completion carries EACCES, and the QP fails).
 */
struct hotpot_rdma_post_read {
	__u64 wr_id; /* returned in the completion */
	__u32 qp_id;
	__u32 mr_id;
	__u64 local_offset;
	__u64 remote_addr;
	__u32 rkey;
	__u32 length;
};

/*
 * HOTPOT_RDMA_IOC_POST_SEND copies [addr, addr + length) now; HOTPOT_RDMA_IOC_POST_RECV remembers the buffer and
 * fills it when its completion is reaped (by this process). 1 <= length <= HOTPOT_RDMA_MAX_MSG; a message longer
 * than the receive buffer fails both ends.
 */
struct hotpot_rdma_post_msg {
	__u64 wr_id;
	__u64 addr;
	__u32 qp_id;
	__u32 length;
};

#define HOTPOT_RDMA_OP_READ 1
#define HOTPOT_RDMA_OP_SEND 2
#define HOTPOT_RDMA_OP_RECV 3

struct hotpot_rdma_completion {
	__u64 wr_id;
	__u32 qp_id;
	__u32 opcode;   /* HOTPOT_RDMA_OP_* */
	__s32 status;   /* 0 or a positive errno: EACCES (peer refused the range), ETIMEDOUT (peer gone),
			   ECANCELED (flushed: the QP failed or was destroyed), EFAULT (receive buffer gone), EIO */
	__u32 byte_len; /* bytes received (RECV) */
};

/*
 * HOTPOT_RDMA_IOC_REAP: move up to max_entries completions to entries[]; waits up to timeout_ms (0 = do not
 * wait, -1 = no limit) for the first one. count = 0 after the wait. Also: poll() says POLLIN when a completion
 * waits, POLLHUP once the device is gone.
 */
struct hotpot_rdma_reap {
	__u64 entries; /* struct hotpot_rdma_completion[max_entries] */
	__u32 max_entries;
	__s32 timeout_ms;
	__u32 count; /* out */
	__u32 reserved;
};

#define HOTPOT_RDMA_IOC_MAGIC 0xB7
#define HOTPOT_RDMA_IOC_BIND _IOWR(HOTPOT_RDMA_IOC_MAGIC, 1, struct hotpot_rdma_bind)
#define HOTPOT_RDMA_IOC_REG_MR _IOWR(HOTPOT_RDMA_IOC_MAGIC, 2, struct hotpot_rdma_reg_mr)
#define HOTPOT_RDMA_IOC_DEREG_MR _IOW(HOTPOT_RDMA_IOC_MAGIC, 3, struct hotpot_rdma_handle)
#define HOTPOT_RDMA_IOC_CREATE_QP _IOR(HOTPOT_RDMA_IOC_MAGIC, 4, struct hotpot_rdma_create_qp)
#define HOTPOT_RDMA_IOC_CONNECT_QP _IOW(HOTPOT_RDMA_IOC_MAGIC, 5, struct hotpot_rdma_connect)
#define HOTPOT_RDMA_IOC_DESTROY_QP _IOW(HOTPOT_RDMA_IOC_MAGIC, 6, struct hotpot_rdma_handle)
#define HOTPOT_RDMA_IOC_POST_READ _IOW(HOTPOT_RDMA_IOC_MAGIC, 7, struct hotpot_rdma_post_read)
#define HOTPOT_RDMA_IOC_POST_SEND _IOW(HOTPOT_RDMA_IOC_MAGIC, 8, struct hotpot_rdma_post_msg)
#define HOTPOT_RDMA_IOC_POST_RECV _IOW(HOTPOT_RDMA_IOC_MAGIC, 9, struct hotpot_rdma_post_msg)
#define HOTPOT_RDMA_IOC_REAP _IOWR(HOTPOT_RDMA_IOC_MAGIC, 10, struct hotpot_rdma_reap)

#endif /* HOTPOT_RDMA_UAPI_H */
