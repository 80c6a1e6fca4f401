// SPDX-License-Identifier: GPL-2.0
/*
 * hotpot_rdma.ko - the RDMA data path of Hotpot node daemons, over the in-kernel verbs API (ib_core).
 *
 * /dev/hotpot-rdma is the door (the ioctls are in hotpot_rdma_uapi.h). Each open file is a session on one device
 * port: a protection domain, one completion queue, reliable-connected QPs and memory regions over pinned pages
 * of the daemon's page files. Pages are fetched with one-sided RDMA READ: the owner's CPU does not serve them.
 * Peers exchange QP numbers, GIDs and rkeys over the daemons' authenticated TCP link; this module only takes
 * them. Counters are in /sys/class/misc/hotpot-rdma/counters/.
 *
 * Lifetimes: a session's resources live until the file is closed or its device is removed (ib_client remove,
 * e.g. `rdma link delete` or rmmod rdma_rxe); then every QP is moved to the error state, its outstanding work
 * requests are flushed, and QPs, regions, CQ and PD are freed. The module cannot be unloaded while a file is
 * open (the file holds a module reference), so unloading never races with a session.
 */
#include <linux/module.h>
#include <linux/miscdevice.h>
#include <linux/fs.h>
#include <linux/file.h>
#include <linux/mm.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/poll.h>
#include <linux/xarray.h>
#include <linux/random.h>
#include <linux/jiffies.h>
#include <linux/workqueue.h>
#include <rdma/ib_verbs.h>
#include <rdma/ib_cache.h>
#include <rdma/ib_addr.h>

#include "hotpot_rdma_uapi.h"

#define HR_NAME "hotpot_rdma"

static unsigned int max_qps_per_fd = 16;
module_param(max_qps_per_fd, uint, 0444);
MODULE_PARM_DESC(max_qps_per_fd, "QPs one open file may create (1..256, default 16)");
static unsigned int max_mrs_per_fd = 256;
module_param(max_mrs_per_fd, uint, 0444);
MODULE_PARM_DESC(max_mrs_per_fd, "memory regions one open file may register (1..65536, default 256)");
static unsigned long max_mr_bytes = 1UL << 30;
module_param(max_mr_bytes, ulong, 0444);
MODULE_PARM_DESC(max_mr_bytes, "largest memory region, bytes (default 1 GiB)");
static unsigned int max_read_bytes = 1U << 20;
module_param(max_read_bytes, uint, 0444);
MODULE_PARM_DESC(max_read_bytes, "largest single RDMA READ, bytes (default 1 MiB)");
static unsigned int qp_depth = 64;
module_param(qp_depth, uint, 0444);
MODULE_PARM_DESC(qp_depth, "outstanding sends+reads and receives per QP, each (1..1024, default 64)");
static unsigned int qp_timeout = 14;
module_param(qp_timeout, uint, 0444);
MODULE_PARM_DESC(qp_timeout, "RC ack timeout exponent: 4.096 us * 2^n (1..31, default 14 = 67 ms)");
/* 6, not the IB maximum 7: Soft-RoCE (rxe) treats 7 as "retry forever", so a vanished peer would never fail
 * the reads posted to it. */
static unsigned int qp_retry_cnt = 6;
module_param(qp_retry_cnt, uint, 0444);
MODULE_PARM_DESC(qp_retry_cnt, "RC retries before a peer counts as gone (0..7, default 6; rxe: 7 = forever)");

/* ---- counters (/sys/class/misc/hotpot-rdma/counters/<name>) ---- */

struct hr_counter_attr {
	struct device_attribute attr;
	atomic64_t value;
};

static ssize_t hr_counter_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	struct hr_counter_attr *c = container_of(attr, struct hr_counter_attr, attr);

	return sysfs_emit(buf, "%lld\n", (long long)atomic64_read(&c->value));
}

#define HR_COUNTER(name) \
	static struct hr_counter_attr hr_c_##name = { __ATTR(name, 0444, hr_counter_show, NULL), ATOMIC64_INIT(0) }
HR_COUNTER(sessions_open);
HR_COUNTER(qps_open);
HR_COUNTER(mrs_open);
HR_COUNTER(bytes_pinned);
HR_COUNTER(reads_posted);
HR_COUNTER(read_bytes);
HR_COUNTER(sends_posted);
HR_COUNTER(recvs_posted);
HR_COUNTER(completions_ok);
HR_COUNTER(completions_failed);
HR_COUNTER(invalid_requests);
HR_COUNTER(devices_removed);

static struct attribute *hr_counter_attrs[] = {
	&hr_c_sessions_open.attr.attr, &hr_c_qps_open.attr.attr,	  &hr_c_mrs_open.attr.attr,
	&hr_c_bytes_pinned.attr.attr,  &hr_c_reads_posted.attr.attr,	  &hr_c_read_bytes.attr.attr,
	&hr_c_sends_posted.attr.attr,  &hr_c_recvs_posted.attr.attr,	  &hr_c_completions_ok.attr.attr,
	&hr_c_completions_failed.attr.attr, &hr_c_invalid_requests.attr.attr, &hr_c_devices_removed.attr.attr,
	NULL,
};
static const struct attribute_group hr_counter_group = { .name = "counters", .attrs = hr_counter_attrs };
static const struct attribute_group *hr_groups[] = { &hr_counter_group, NULL };

#define hr_count(name, n) atomic64_add((n), &hr_c_##name.value)

/* ---- objects ---- */

/* One RDMA device seen by our ib_client; sessions bound to it are torn down when it goes away. */
struct hr_dev {
	struct ib_device *ib;
	struct list_head node;	   /* hr_devices */
	struct list_head sessions; /* hr_session.dev_node */
};

struct hr_session {
	struct mutex lock;	   /* everything below except the completion list */
	struct list_head dev_node; /* under hr_lock */
	struct hr_dev *dev;	   /* NULL until bound and after the device is removed */
	bool dead;		   /* device removed: every call but REAP fails with ENODEV */
	struct mm_struct *mm;	   /* the opener; pages are pinned from and receive data copied to it */
	struct ib_pd *pd;
	struct ib_cq *cq;
	u32 port;
	u32 gid_index;
	union ib_gid gid;
	enum ib_mtu mtu;
	struct xarray qps; /* id -> hr_qp */
	struct xarray mrs; /* id -> hr_mr */
	unsigned int nqps, nmrs;

	spinlock_t done_lock;
	struct list_head done; /* hr_wr, completed, not yet reaped */
	wait_queue_head_t wq;
};

struct hr_qp {
	struct ib_qp *qp;
	u32 id;
	u32 psn;
	bool connected;
	bool failed;	       /* a work request completed in error: the QP is in the error state */
	atomic_t send_out;     /* outstanding sends + reads */
	atomic_t recv_out;     /* outstanding receives */
	/* Moves the QP to the error state after a failed completion, so every request still queued on it completes
	 * (flushed) instead of waiting: Soft-RoCE on 6.1 leaves them queued after some local errors. */
	struct work_struct err_work;
};

struct hr_mr {
	struct ib_mr *mr;
	u64 length;
	u32 access;
};

/* One posted work request, from post to reap. */
struct hr_wr {
	struct ib_cqe cqe;
	struct list_head node;
	struct hr_session *s;
	struct hr_qp *q;
	u64 wr_id;
	u32 qp_id;
	u32 opcode;
	int status; /* positive errno */
	u32 byte_len;
	void *buf; /* SEND/RECV bounce buffer */
	u64 dma;
	u32 buf_len;
	u64 uaddr; /* RECV: where reaping copies the data */
};

static DEFINE_MUTEX(hr_lock); /* hr_devices and every hr_dev.sessions; taken before a session's lock */
static LIST_HEAD(hr_devices);
static struct ib_client hr_client;

static int hr_wc_errno(enum ib_wc_status st)
{
	switch (st) {
	case IB_WC_SUCCESS:
		return 0;
	case IB_WC_REM_ACCESS_ERR:
	case IB_WC_LOC_ACCESS_ERR:
		return EACCES;
	case IB_WC_RETRY_EXC_ERR:
	case IB_WC_RNR_RETRY_EXC_ERR:
		return ETIMEDOUT;
	case IB_WC_WR_FLUSH_ERR:
		return ECANCELED;
	case IB_WC_LOC_PROT_ERR:
	case IB_WC_LOC_LEN_ERR:
		return EMSGSIZE;
	case IB_WC_REM_INV_REQ_ERR:
		return EINVAL;
	default:
		return EIO;
	}
}

static void hr_qp_err_work(struct work_struct *work)
{
	struct hr_qp *q = container_of(work, struct hr_qp, err_work);
	struct ib_qp_attr attr = { .qp_state = IB_QPS_ERR };

	ib_modify_qp(q->qp, &attr, IB_QP_STATE);
}

/* Runs in softirq (IB_POLL_SOFTIRQ CQ): record the result and hand the request to REAP. */
static void hr_wr_done(struct ib_cq *cq, struct ib_wc *wc)
{
	struct hr_wr *w = container_of(wc->wr_cqe, struct hr_wr, cqe);
	struct hr_session *s = w->s;
	struct hr_qp *q = w->q;
	unsigned long flags;

	w->status = hr_wc_errno(wc->status);
	w->byte_len = wc->byte_len;
	if (w->buf)
		ib_dma_unmap_single(cq->device, w->dma, w->buf_len,
				    w->opcode == HOTPOT_RDMA_OP_RECV ? DMA_FROM_DEVICE : DMA_TO_DEVICE);
	if (w->status) {
		/* The first failure tells why the QP failed; the flushes after it say nothing new. */
		if (!READ_ONCE(q->failed) && wc->status != IB_WC_WR_FLUSH_ERR)
			pr_info_ratelimited(HR_NAME ": qp %u: %s failed: %s (vendor error 0x%x)\n", wc->qp->qp_num,
					    w->opcode == HOTPOT_RDMA_OP_READ ? "read" :
					    w->opcode == HOTPOT_RDMA_OP_SEND ? "send" : "receive",
					    ib_wc_status_msg(wc->status), wc->vendor_err);
		if (!READ_ONCE(q->failed) && wc->status != IB_WC_WR_FLUSH_ERR)
			schedule_work(&q->err_work);
		WRITE_ONCE(q->failed, true);
		hr_count(completions_failed, 1);
	} else {
		hr_count(completions_ok, 1);
	}
	spin_lock_irqsave(&s->done_lock, flags);
	list_add_tail(&w->node, &s->done);
	spin_unlock_irqrestore(&s->done_lock, flags);
	/* The last touch of q: once its counters reach 0, hr_qp_destroy may free it. The session outlives every
	 * callback (ib_free_cq waits for a running poll). */
	if (w->opcode == HOTPOT_RDMA_OP_RECV)
		atomic_dec(&q->recv_out);
	else
		atomic_dec(&q->send_out);
	wake_up_all(&s->wq);
}

static struct hr_wr *hr_wr_new(struct hr_session *s, struct hr_qp *q, u32 qp_id, u64 wr_id, u32 opcode)
{
	struct hr_wr *w = kzalloc(sizeof(*w), GFP_KERNEL);

	if (!w)
		return NULL;
	w->cqe.done = hr_wr_done;
	w->s = s;
	w->q = q;
	w->qp_id = qp_id;
	w->wr_id = wr_id;
	w->opcode = opcode;
	INIT_LIST_HEAD(&w->node);
	return w;
}

static void hr_wr_free(struct hr_wr *w)
{
	kfree(w->buf);
	kfree(w);
}

/* ---- teardown (session lock held) ---- */

static void hr_qp_destroy(struct hr_session *s, struct hr_qp *q)
{
	struct ib_qp_attr attr = { .qp_state = IB_QPS_ERR };

	/* The error state flushes every outstanding request through hr_wr_done; wait for that before the QP and
	 * the counters it decrements go away. */
	ib_modify_qp(q->qp, &attr, IB_QP_STATE);
	if (!wait_event_timeout(s->wq, !atomic_read(&q->send_out) && !atomic_read(&q->recv_out), 10 * HZ)) {
		/* Never free what a late completion could still touch: leak this QP's bookkeeping instead (marked
		 * failed, so a late completion schedules no work on it). */
		pr_warn(HR_NAME ": qp %u: %d sends, %d receives not flushed after 10 s; leaking them\n", q->qp->qp_num,
			atomic_read(&q->send_out), atomic_read(&q->recv_out));
		WRITE_ONCE(q->failed, true);
		cancel_work_sync(&q->err_work);
		ib_destroy_qp(q->qp);
		hr_count(qps_open, -1);
		return;
	}
	/* Every completion callback has run (the counters are 0), so none can queue err_work again. */
	cancel_work_sync(&q->err_work);
	ib_destroy_qp(q->qp);
	hr_count(qps_open, -1);
	kfree(q);
}

static void hr_mr_destroy(struct hr_mr *m)
{
	ib_dereg_mr(m->mr);
	hr_count(mrs_open, -1);
	hr_count(bytes_pinned, -(s64)m->length);
	kfree(m);
}

/* Frees every device resource; completions already queued stay for REAP (they hold only kernel memory). */
static void hr_session_release_device(struct hr_session *s)
{
	struct hr_qp *q;
	struct hr_mr *m;
	unsigned long id;

	xa_for_each(&s->qps, id, q) {
		xa_erase(&s->qps, id);
		hr_qp_destroy(s, q);
	}
	xa_for_each(&s->mrs, id, m) {
		xa_erase(&s->mrs, id);
		hr_mr_destroy(m);
	}
	s->nqps = 0;
	s->nmrs = 0;
	if (s->cq)
		ib_free_cq(s->cq);
	if (s->pd)
		ib_dealloc_pd(s->pd);
	s->cq = NULL;
	s->pd = NULL;
}

/* ---- ioctls (session lock held unless noted) ---- */

static int hr_usable(struct hr_session *s)
{
	if (s->dead)
		return -ENODEV;
	if (!s->dev)
		return -ENOTCONN; /* not bound yet */
	return 0;
}

/* hr_lock and the session lock held */
static int hr_bind(struct hr_session *s, struct hotpot_rdma_bind *b)
{
	struct ib_port_attr pattr;
	struct hr_dev *d, *found = NULL;
	int ret;

	if (s->dead)
		return -ENODEV;
	if (s->dev)
		return -EALREADY;
	if (strnlen(b->device, sizeof(b->device)) == sizeof(b->device))
		return -EINVAL;
	if (b->port == 0)
		b->port = 1;
	list_for_each_entry(d, &hr_devices, node) {
		if (b->device[0] ? !strcmp(dev_name(&d->ib->dev), b->device) : rdma_protocol_roce(d->ib, 1)) {
			found = d;
			break;
		}
	}
	if (!found)
		return -ENODEV;
	if (!rdma_is_port_valid(found->ib, b->port))
		return -EINVAL;
	/* Connecting a kernel QP needs the peer's L2 address, which only RoCE provides this way (connect ioctl). */
	if (!rdma_protocol_roce(found->ib, b->port))
		return -EOPNOTSUPP;
	ret = ib_query_port(found->ib, b->port, &pattr);
	if (ret)
		return ret;
	if (b->gid_index >= pattr.gid_tbl_len)
		return -EINVAL;
	ret = rdma_query_gid(found->ib, b->port, b->gid_index, &s->gid);
	if (ret)
		return -EINVAL; /* an empty GID slot */

	s->pd = ib_alloc_pd(found->ib, 0);
	if (IS_ERR(s->pd)) {
		ret = PTR_ERR(s->pd);
		s->pd = NULL;
		return ret;
	}
	s->cq = ib_alloc_cq(found->ib, s, max_qps_per_fd * qp_depth * 2, 0, IB_POLL_SOFTIRQ);
	if (IS_ERR(s->cq)) {
		ret = PTR_ERR(s->cq);
		s->cq = NULL;
		ib_dealloc_pd(s->pd);
		s->pd = NULL;
		return ret;
	}
	s->port = b->port;
	s->gid_index = b->gid_index;
	s->mtu = pattr.active_mtu;
	s->dev = found;
	list_add_tail(&s->dev_node, &found->sessions);

	strscpy(b->device, dev_name(&found->ib->dev), sizeof(b->device));
	memcpy(b->gid, s->gid.raw, sizeof(b->gid));
	b->mtu = ib_mtu_enum_to_int(pattr.active_mtu);
	b->abi_version = HOTPOT_RDMA_ABI_VERSION;
	return 0;
}

/* The range must lie in one shared mapping of `file` (a private mapping would pin copies, not the file). */
static int hr_check_file_range(struct mm_struct *mm, struct file *file, u64 addr, u64 length)
{
	struct vm_area_struct *vma;
	int ret = 0;

	mmap_read_lock(mm);
	vma = vma_lookup(mm, addr);
	if (!vma)
		ret = -EFAULT;
	else if (vma->vm_file != file || !(vma->vm_flags & VM_SHARED) || addr + length > vma->vm_end)
		ret = -EINVAL;
	mmap_read_unlock(mm);
	return ret;
}

static int hr_reg_mr(struct hr_session *s, struct hotpot_rdma_reg_mr *r)
{
	struct hr_mr *m;
	struct ib_mr *mr;
	int access = 0, ret;
	u32 id;

	ret = hr_usable(s);
	if (ret)
		return ret;
	if (!r->length || !PAGE_ALIGNED(r->addr) || !PAGE_ALIGNED(r->length) || !r->access ||
	    (r->access & ~HOTPOT_RDMA_ACCESS_ALL) || r->mr_id || r->rkey || r->fd < -1)
		return -EINVAL;
	if (r->length > max_mr_bytes)
		return -E2BIG;
	if (r->addr + r->length < r->addr || r->addr + r->length > TASK_SIZE)
		return -EFAULT;
	if (s->nmrs >= max_mrs_per_fd)
		return -ENOSPC;
	if (r->fd >= 0) {
		struct file *file = fget(r->fd);

		if (!file)
			return -EBADF;
		ret = hr_check_file_range(s->mm, file, r->addr, r->length);
		fput(file);
		if (ret)
			return ret;
	}
	if (r->access & HOTPOT_RDMA_ACCESS_LOCAL_WRITE)
		access |= IB_ACCESS_LOCAL_WRITE;
	if (r->access & HOTPOT_RDMA_ACCESS_REMOTE_READ)
		access |= IB_ACCESS_REMOTE_READ;

	m = kzalloc(sizeof(*m), GFP_KERNEL);
	if (!m)
		return -ENOMEM;
	/* Pins the pages of current->mm (the ioctl checked current->mm == s->mm). I/O virtual address 0: peers
	 * address the region by offset. */
	mr = ib_reg_user_mr(s->pd, r->addr, r->length, 0, access);
	if (IS_ERR(mr)) {
		kfree(m);
		return PTR_ERR(mr);
	}
	m->mr = mr;
	m->length = r->length;
	m->access = r->access;
	ret = xa_alloc(&s->mrs, &id, m, XA_LIMIT(1, U32_MAX), GFP_KERNEL);
	if (ret) {
		ib_dereg_mr(mr);
		kfree(m);
		return ret;
	}
	s->nmrs++;
	hr_count(mrs_open, 1);
	hr_count(bytes_pinned, r->length);
	r->mr_id = id;
	r->rkey = (r->access & HOTPOT_RDMA_ACCESS_REMOTE_READ) ? mr->rkey : 0;
	return 0;
}

static int hr_dereg_mr(struct hr_session *s, struct hotpot_rdma_handle *h)
{
	struct hr_mr *m;
	int ret = hr_usable(s);

	if (ret)
		return ret;
	if (h->reserved)
		return -EINVAL;
	m = xa_erase(&s->mrs, h->id);
	if (!m)
		return -ENOENT;
	s->nmrs--;
	/* A READ in flight into this region completes with an access error; the hardware checks the key. */
	hr_mr_destroy(m);
	return 0;
}

static int hr_create_qp(struct hr_session *s, struct hotpot_rdma_create_qp *c)
{
	struct ib_qp_init_attr init = {};
	struct ib_qp_attr attr = {};
	struct hr_qp *q;
	int ret;
	u32 id;

	ret = hr_usable(s);
	if (ret)
		return ret;
	if (s->nqps >= max_qps_per_fd)
		return -ENOSPC;
	q = kzalloc(sizeof(*q), GFP_KERNEL);
	if (!q)
		return -ENOMEM;
	atomic_set(&q->send_out, 0);
	atomic_set(&q->recv_out, 0);
	INIT_WORK(&q->err_work, hr_qp_err_work);
	init.send_cq = s->cq;
	init.recv_cq = s->cq;
	init.cap.max_send_wr = qp_depth;
	init.cap.max_recv_wr = qp_depth;
	init.cap.max_send_sge = 1;
	init.cap.max_recv_sge = 1;
	init.sq_sig_type = IB_SIGNAL_ALL_WR;
	init.qp_type = IB_QPT_RC;
	q->qp = ib_create_qp(s->pd, &init);
	if (IS_ERR(q->qp)) {
		ret = PTR_ERR(q->qp);
		kfree(q);
		return ret;
	}
	/* Peers may READ regions of this session through this QP; nobody may write them remotely. */
	attr.qp_state = IB_QPS_INIT;
	attr.pkey_index = 0;
	attr.port_num = s->port;
	attr.qp_access_flags = IB_ACCESS_REMOTE_READ;
	ret = ib_modify_qp(q->qp, &attr, IB_QP_STATE | IB_QP_PKEY_INDEX | IB_QP_PORT | IB_QP_ACCESS_FLAGS);
	if (!ret)
		ret = xa_alloc(&s->qps, &id, q, XA_LIMIT(1, U32_MAX), GFP_KERNEL);
	if (ret) {
		ib_destroy_qp(q->qp);
		kfree(q);
		return ret;
	}
	q->id = id;
	q->psn = get_random_u32() & 0xffffff;
	s->nqps++;
	hr_count(qps_open, 1);
	c->qp_id = id;
	c->qpn = q->qp->qp_num;
	c->psn = q->psn;
	c->reserved = 0;
	return 0;
}

static int hr_connect_qp(struct hr_session *s, struct hotpot_rdma_connect *c)
{
	static const u8 zero_mac[6];
	struct ib_qp_attr attr = {};
	union ib_gid dgid;
	struct hr_qp *q;
	int ret;

	ret = hr_usable(s);
	if (ret)
		return ret;
	if (c->reserved || c->reserved2[0] || c->reserved2[1] || !c->remote_qpn || c->remote_qpn > 0xffffff ||
	    c->remote_psn > 0xffffff)
		return -EINVAL;
	q = xa_load(&s->qps, c->qp_id);
	if (!q)
		return -ENOENT;
	if (q->connected)
		return -EISCONN;
	memcpy(dgid.raw, c->remote_gid, sizeof(dgid.raw));
	if (!memcmp(&dgid, &zgid, sizeof(dgid)))
		return -EINVAL;

	attr.qp_state = IB_QPS_RTR;
	attr.path_mtu = s->mtu;
	attr.dest_qp_num = c->remote_qpn;
	attr.rq_psn = c->remote_psn;
	attr.max_dest_rd_atomic = 16;
	attr.min_rnr_timer = 12;
	attr.ah_attr.type = rdma_ah_find_type(s->dev->ib, s->port);
	rdma_ah_set_port_num(&attr.ah_attr, s->port);
	rdma_ah_set_grh(&attr.ah_attr, &dgid, 0, s->gid_index, 64, 0);
	/* Kernel QPs must be given a resolved L2 address (ib_core resolves it only for user-space QPs). */
	if (memcmp(c->remote_mac, zero_mac, sizeof(zero_mac)))
		memcpy(attr.ah_attr.roce.dmac, c->remote_mac, ETH_ALEN);
	else if (rdma_link_local_addr((struct in6_addr *)dgid.raw))
		rdma_get_ll_mac((struct in6_addr *)dgid.raw, attr.ah_attr.roce.dmac);
	else
		return -EDESTADDRREQ;
	ret = ib_modify_qp(q->qp, &attr,
			   IB_QP_STATE | IB_QP_AV | IB_QP_PATH_MTU | IB_QP_DEST_QPN | IB_QP_RQ_PSN |
				   IB_QP_MAX_DEST_RD_ATOMIC | IB_QP_MIN_RNR_TIMER);
	if (ret)
		return ret;
	memset(&attr, 0, sizeof(attr));
	attr.qp_state = IB_QPS_RTS;
	attr.timeout = qp_timeout;
	attr.retry_cnt = qp_retry_cnt;
	attr.rnr_retry = 7;
	attr.sq_psn = q->psn;
	attr.max_rd_atomic = 16;
	ret = ib_modify_qp(q->qp, &attr,
			   IB_QP_STATE | IB_QP_TIMEOUT | IB_QP_RETRY_CNT | IB_QP_RNR_RETRY | IB_QP_SQ_PSN |
				   IB_QP_MAX_QP_RD_ATOMIC);
	if (ret)
		return ret;
	q->connected = true;
	return 0;
}

static int hr_destroy_qp(struct hr_session *s, struct hotpot_rdma_handle *h)
{
	struct hr_qp *q;
	int ret = hr_usable(s);

	if (ret)
		return ret;
	if (h->reserved)
		return -EINVAL;
	q = xa_erase(&s->qps, h->id);
	if (!q)
		return -ENOENT;
	s->nqps--;
	hr_qp_destroy(s, q);
	return 0;
}

/* The QP a post goes to: connected, not failed, with room in its send queue (reserved here). */
static int hr_qp_for_post(struct hr_session *s, u32 qp_id, bool recv, struct hr_qp **out)
{
	struct hr_qp *q = xa_load(&s->qps, qp_id);
	atomic_t *out_cnt;

	if (!q)
		return -ENOENT;
	if (!q->connected)
		return -ENOTCONN;
	if (READ_ONCE(q->failed))
		return -ECONNRESET;
	out_cnt = recv ? &q->recv_out : &q->send_out;
	if (atomic_inc_return(out_cnt) > qp_depth) {
		atomic_dec(out_cnt);
		return -EAGAIN; /* reap completions first */
	}
	*out = q;
	return 0;
}

static void hr_qp_unreserve(struct hr_qp *q, bool recv)
{
	atomic_dec(recv ? &q->recv_out : &q->send_out);
}

static int hr_post_read(struct hr_session *s, struct hotpot_rdma_post_read *p)
{
	const struct ib_send_wr *bad;
	struct ib_rdma_wr wr = {};
	struct ib_sge sge;
	struct hr_mr *m;
	struct hr_qp *q;
	struct hr_wr *w;
	int ret = hr_usable(s);

	if (ret)
		return ret;
	if (!p->length || p->length > max_read_bytes || p->remote_addr + p->length < p->remote_addr)
		return -EINVAL;
	m = xa_load(&s->mrs, p->mr_id);
	if (!m)
		return -ENOENT;
	if (!(m->access & HOTPOT_RDMA_ACCESS_LOCAL_WRITE))
		return -EACCES;
	if (p->local_offset > m->length || p->length > m->length - p->local_offset)
		return -ERANGE;
	ret = hr_qp_for_post(s, p->qp_id, false, &q);
	if (ret)
		return ret;
	w = hr_wr_new(s, q, p->qp_id, p->wr_id, HOTPOT_RDMA_OP_READ);
	if (!w) {
		hr_qp_unreserve(q, false);
		return -ENOMEM;
	}
	sge.addr = p->local_offset; /* the region's I/O virtual addresses start at 0 */
	sge.length = p->length;
	sge.lkey = m->mr->lkey;
	wr.wr.wr_cqe = &w->cqe;
	wr.wr.opcode = IB_WR_RDMA_READ;
	wr.wr.send_flags = IB_SEND_SIGNALED;
	wr.wr.sg_list = &sge;
	wr.wr.num_sge = 1;
	wr.remote_addr = p->remote_addr;
	wr.rkey = p->rkey;
	ret = ib_post_send(q->qp, &wr.wr, &bad);
	if (ret) {
		hr_wr_free(w);
		hr_qp_unreserve(q, false);
		return ret;
	}
	hr_count(reads_posted, 1);
	hr_count(read_bytes, p->length);
	return 0;
}

static int hr_post_msg(struct hr_session *s, struct hotpot_rdma_post_msg *p, bool recv)
{
	struct ib_device *ib;
	struct ib_sge sge;
	struct hr_qp *q;
	struct hr_wr *w;
	int ret = hr_usable(s);

	if (ret)
		return ret;
	if (!p->length || p->length > HOTPOT_RDMA_MAX_MSG)
		return -EINVAL;
	if (!access_ok(u64_to_user_ptr(p->addr), p->length))
		return -EFAULT;
	ret = hr_qp_for_post(s, p->qp_id, recv, &q);
	if (ret)
		return ret;
	ib = s->dev->ib;
	ret = -ENOMEM;
	w = hr_wr_new(s, q, p->qp_id, p->wr_id, recv ? HOTPOT_RDMA_OP_RECV : HOTPOT_RDMA_OP_SEND);
	if (!w)
		goto unreserve;
	w->buf = kmalloc(p->length, GFP_KERNEL);
	if (!w->buf)
		goto free;
	w->buf_len = p->length;
	w->uaddr = p->addr;
	if (!recv && copy_from_user(w->buf, u64_to_user_ptr(p->addr), p->length)) {
		ret = -EFAULT;
		goto free;
	}
	w->dma = ib_dma_map_single(ib, w->buf, p->length, recv ? DMA_FROM_DEVICE : DMA_TO_DEVICE);
	if (ib_dma_mapping_error(ib, w->dma))
		goto free;
	sge.addr = w->dma;
	sge.length = p->length;
	sge.lkey = s->pd->local_dma_lkey;
	if (recv) {
		struct ib_recv_wr wr = { .wr_cqe = &w->cqe, .sg_list = &sge, .num_sge = 1 };
		const struct ib_recv_wr *bad;

		ret = ib_post_recv(q->qp, &wr, &bad);
	} else {
		struct ib_send_wr wr = { .wr_cqe = &w->cqe, .opcode = IB_WR_SEND, .send_flags = IB_SEND_SIGNALED,
					 .sg_list = &sge, .num_sge = 1 };
		const struct ib_send_wr *bad;

		ret = ib_post_send(q->qp, &wr, &bad);
	}
	if (ret) {
		ib_dma_unmap_single(ib, w->dma, p->length, recv ? DMA_FROM_DEVICE : DMA_TO_DEVICE);
		goto free;
	}
	if (recv)
		hr_count(recvs_posted, 1);
	else
		hr_count(sends_posted, 1);
	return 0;
free:
	hr_wr_free(w);
unreserve:
	hr_qp_unreserve(q, recv);
	return ret;
}

/* No session lock: waits on the completion list only. */
static int hr_reap(struct hr_session *s, struct hotpot_rdma_reap *r)
{
	struct hotpot_rdma_completion __user *out = u64_to_user_ptr(r->entries);
	struct hr_wr *w, *tmp;
	LIST_HEAD(batch);
	unsigned int n = 0;
	long wait;
	int ret = 0;

	if (r->reserved || r->count || !r->max_entries || r->max_entries > 4096 || r->timeout_ms < -1)
		return -EINVAL;
	if (!access_ok(out, (size_t)r->max_entries * sizeof(*out)))
		return -EFAULT;
	if (r->timeout_ms) {
		wait = r->timeout_ms < 0 ? MAX_SCHEDULE_TIMEOUT : msecs_to_jiffies(r->timeout_ms);
		wait = wait_event_interruptible_timeout(s->wq, !list_empty_careful(&s->done) || READ_ONCE(s->dead),
							wait);
		if (wait < 0)
			return wait; /* -ERESTARTSYS */
	}
	spin_lock_irq(&s->done_lock);
	list_for_each_entry_safe(w, tmp, &s->done, node) {
		if (n == r->max_entries)
			break;
		list_move_tail(&w->node, &batch);
		n++;
	}
	spin_unlock_irq(&s->done_lock);
	if (!n && READ_ONCE(s->dead))
		return -ENODEV;

	n = 0;
	list_for_each_entry_safe(w, tmp, &batch, node) {
		struct hotpot_rdma_completion c = {
			.wr_id = w->wr_id, .qp_id = w->qp_id, .opcode = w->opcode, .status = w->status,
		};

		if (w->opcode == HOTPOT_RDMA_OP_RECV && !w->status) {
			c.byte_len = min(w->byte_len, w->buf_len);
			if (copy_to_user(u64_to_user_ptr(w->uaddr), w->buf, c.byte_len))
				c.status = EFAULT;
		}
		if (!ret && copy_to_user(&out[n], &c, sizeof(c)))
			ret = -EFAULT; /* the entries are lost either way; keep freeing them */
		n++;
		list_del(&w->node);
		hr_wr_free(w);
	}
	r->count = ret ? 0 : n;
	return ret;
}

static long hr_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct hr_session *s = file->private_data;
	void __user *uarg = (void __user *)arg;
	union {
		struct hotpot_rdma_bind bind;
		struct hotpot_rdma_reg_mr reg;
		struct hotpot_rdma_handle handle;
		struct hotpot_rdma_create_qp create;
		struct hotpot_rdma_connect connect;
		struct hotpot_rdma_post_read read;
		struct hotpot_rdma_post_msg msg;
		struct hotpot_rdma_reap reap;
	} u;
	size_t size = _IOC_SIZE(cmd);
	int ret;

	switch (cmd) {
	case HOTPOT_RDMA_IOC_BIND:
	case HOTPOT_RDMA_IOC_REG_MR:
	case HOTPOT_RDMA_IOC_DEREG_MR:
	case HOTPOT_RDMA_IOC_CREATE_QP:
	case HOTPOT_RDMA_IOC_CONNECT_QP:
	case HOTPOT_RDMA_IOC_DESTROY_QP:
	case HOTPOT_RDMA_IOC_POST_READ:
	case HOTPOT_RDMA_IOC_POST_SEND:
	case HOTPOT_RDMA_IOC_POST_RECV:
	case HOTPOT_RDMA_IOC_REAP:
		break;
	default:
		return -ENOTTY;
	}
	/* Pages are pinned from, and received data copied to, the opener's address space only. */
	if (current->mm != s->mm)
		return -EPERM;
	memset(&u, 0, sizeof(u));
	if ((_IOC_DIR(cmd) & _IOC_WRITE) && copy_from_user(&u, uarg, size))
		return -EFAULT;

	if (cmd == HOTPOT_RDMA_IOC_REAP) {
		ret = hr_reap(s, &u.reap);
	} else if (cmd == HOTPOT_RDMA_IOC_BIND) {
		mutex_lock(&hr_lock);
		mutex_lock(&s->lock);
		ret = hr_bind(s, &u.bind);
		mutex_unlock(&s->lock);
		mutex_unlock(&hr_lock);
	} else {
		mutex_lock(&s->lock);
		switch (cmd) {
		case HOTPOT_RDMA_IOC_REG_MR:
			ret = hr_reg_mr(s, &u.reg);
			break;
		case HOTPOT_RDMA_IOC_DEREG_MR:
			ret = hr_dereg_mr(s, &u.handle);
			break;
		case HOTPOT_RDMA_IOC_CREATE_QP:
			ret = hr_create_qp(s, &u.create);
			break;
		case HOTPOT_RDMA_IOC_CONNECT_QP:
			ret = hr_connect_qp(s, &u.connect);
			break;
		case HOTPOT_RDMA_IOC_DESTROY_QP:
			ret = hr_destroy_qp(s, &u.handle);
			break;
		case HOTPOT_RDMA_IOC_POST_READ:
			ret = hr_post_read(s, &u.read);
			break;
		case HOTPOT_RDMA_IOC_POST_SEND:
			ret = hr_post_msg(s, &u.msg, false);
			break;
		default: /* HOTPOT_RDMA_IOC_POST_RECV */
			ret = hr_post_msg(s, &u.msg, true);
			break;
		}
		mutex_unlock(&s->lock);
	}
	if (ret == -EINVAL || ret == -ERANGE || ret == -ENOENT || ret == -EBADF || ret == -E2BIG)
		hr_count(invalid_requests, 1);
	if (!ret && (_IOC_DIR(cmd) & _IOC_READ) && copy_to_user(uarg, &u, size))
		return -EFAULT;
	return ret;
}

static __poll_t hr_poll(struct file *file, poll_table *wait)
{
	struct hr_session *s = file->private_data;
	__poll_t mask = 0;

	poll_wait(file, &s->wq, wait);
	if (!list_empty_careful(&s->done))
		mask |= EPOLLIN | EPOLLRDNORM;
	if (READ_ONCE(s->dead))
		mask |= EPOLLHUP | EPOLLERR;
	return mask;
}

static int hr_open(struct inode *inode, struct file *file)
{
	struct hr_session *s;

	if (!current->mm)
		return -EPERM;
	s = kzalloc(sizeof(*s), GFP_KERNEL);
	if (!s)
		return -ENOMEM;
	mutex_init(&s->lock);
	INIT_LIST_HEAD(&s->dev_node);
	xa_init_flags(&s->qps, XA_FLAGS_ALLOC1);
	xa_init_flags(&s->mrs, XA_FLAGS_ALLOC1);
	spin_lock_init(&s->done_lock);
	INIT_LIST_HEAD(&s->done);
	init_waitqueue_head(&s->wq);
	mmgrab(current->mm);
	s->mm = current->mm;
	file->private_data = s;
	hr_count(sessions_open, 1);
	return nonseekable_open(inode, file);
}

static int hr_release(struct inode *inode, struct file *file)
{
	struct hr_session *s = file->private_data;
	struct hr_wr *w, *tmp;

	mutex_lock(&hr_lock);
	mutex_lock(&s->lock);
	if (s->dev) {
		list_del_init(&s->dev_node);
		hr_session_release_device(s);
		s->dev = NULL;
	}
	mutex_unlock(&s->lock);
	mutex_unlock(&hr_lock);
	list_for_each_entry_safe(w, tmp, &s->done, node) {
		list_del(&w->node);
		hr_wr_free(w);
	}
	xa_destroy(&s->qps);
	xa_destroy(&s->mrs);
	mmdrop(s->mm);
	kfree(s);
	hr_count(sessions_open, -1);
	return 0;
}

static const struct file_operations hr_fops = {
	.owner = THIS_MODULE,
	.open = hr_open,
	.release = hr_release,
	.unlocked_ioctl = hr_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.poll = hr_poll,
	.llseek = no_llseek,
};

static struct miscdevice hr_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "hotpot-rdma",
	.fops = &hr_fops,
	.groups = hr_groups,
	.mode = 0600,
};

/* ---- ib_client ---- */

static int hr_add_device(struct ib_device *ib)
{
	struct hr_dev *d = kzalloc(sizeof(*d), GFP_KERNEL);

	if (!d)
		return -ENOMEM;
	d->ib = ib;
	INIT_LIST_HEAD(&d->sessions);
	mutex_lock(&hr_lock);
	list_add_tail(&d->node, &hr_devices);
	mutex_unlock(&hr_lock);
	ib_set_client_data(ib, &hr_client, d);
	pr_info(HR_NAME ": device %s added\n", dev_name(&ib->dev));
	return 0;
}

/* The device is going away (rxe link deleted, driver unloaded): free every session's resources on it now. */
static void hr_remove_device(struct ib_device *ib, void *client_data)
{
	struct hr_dev *d = client_data;
	struct hr_session *s, *tmp;

	mutex_lock(&hr_lock);
	list_for_each_entry_safe(s, tmp, &d->sessions, dev_node) {
		mutex_lock(&s->lock);
		list_del_init(&s->dev_node);
		hr_session_release_device(s);
		s->dev = NULL;
		WRITE_ONCE(s->dead, true);
		mutex_unlock(&s->lock);
		wake_up_interruptible_all(&s->wq);
	}
	list_del(&d->node);
	mutex_unlock(&hr_lock);
	hr_count(devices_removed, 1);
	pr_info(HR_NAME ": device %s removed\n", dev_name(&ib->dev));
	kfree(d);
}

static struct ib_client hr_client = {
	.name = HR_NAME,
	.add = hr_add_device,
	.remove = hr_remove_device,
};

static int __init hr_init(void)
{
	int ret;

	if (!max_qps_per_fd || max_qps_per_fd > 256 || !max_mrs_per_fd || max_mrs_per_fd > 65536 || !qp_depth ||
	    qp_depth > 1024 || !qp_timeout || qp_timeout > 31 || qp_retry_cnt > 7 || !max_read_bytes ||
	    max_mr_bytes < PAGE_SIZE) {
		pr_err(HR_NAME ": a module parameter is out of range (see modinfo hotpot_rdma)\n");
		return -EINVAL;
	}
	ret = ib_register_client(&hr_client);
	if (ret)
		return ret;
	ret = misc_register(&hr_misc);
	if (ret) {
		ib_unregister_client(&hr_client);
		return ret;
	}
	pr_info(HR_NAME ": loaded, ABI %d\n", HOTPOT_RDMA_ABI_VERSION);
	return 0;
}

static void __exit hr_exit(void)
{
	/* No file is open (each holds a module reference), so no session exists. */
	misc_deregister(&hr_misc);
	ib_unregister_client(&hr_client);
	pr_info(HR_NAME ": unloaded\n");
}

module_init(hr_init);
module_exit(hr_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Hotpot: RDMA data path (RC QPs, one-sided READ of registered page files) for node daemons");
