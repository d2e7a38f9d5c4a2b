/* The virtio entropy driver, written in C: the same device and the same protocol as the Rust
 * driver in ../virtio-rng, through Mica's `mica:hw` and `mica:kernel/ipc` interfaces as C
 * functions (`mica.h`, generated from the WIT by wit-bindgen when xtask builds this directory).
 *
 * It claims the first granted virtio-rng device (device id 4), sets it up as a virtio 1.x
 * device over the virtio-mmio transport with one split virtqueue, and serves the `entropy`
 * connection: a request is a byte count (u32 little-endian, 1 to 4096) and the answer is that
 * many bytes from the device. A malformed request is answered with no bytes. When the device
 * fails, the request is answered with no bytes and the driver ends with status 1, so that the
 * kernel resets the device. It ends with status 0 once every client has gone.
 *
 * The queue's rings and the buffer the device writes into are DMA buffers mapped into this
 * program's own memory (`map-into-memory`): the driver reads and writes them as C structures,
 * and answers a request straight from the bytes the device wrote. */

#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mica.h"

#define NAME "virtio-rng-c"

/* The virtio device id of an entropy source. */
#define VIRTIO_ID_ENTROPY 4
/* The most bytes one request may ask for (the protocol's limit). */
#define MAX_BYTES 4096
/* Descriptors in the request queue (one request is in flight at a time). */
#define QUEUE_SIZE 8
/* How long the device may take to return a buffer. */
#define DEVICE_TIMEOUT_NS 10000000000ull
/* Returns of no bytes in a row after which the device counts as broken. */
#define MAX_EMPTY_RETURNS 16
/* DMA buffers are mapped at page granularity. */
#define PAGE_SIZE 4096
/* Room for the largest message the kernel passes, and for the handles one may carry. */
#define MAX_MESSAGE_BYTES 65536
#define MAX_MESSAGE_HANDLES 16

/* virtio-mmio registers (virtio 1.x, "modern" layout). */
enum {
    REG_MAGIC = 0x000,
    REG_VERSION = 0x004,
    REG_DEVICE_ID = 0x008,
    REG_DEVICE_FEATURES = 0x010,
    REG_DEVICE_FEATURES_SEL = 0x014,
    REG_DRIVER_FEATURES = 0x020,
    REG_DRIVER_FEATURES_SEL = 0x024,
    REG_QUEUE_SEL = 0x030,
    REG_QUEUE_NUM_MAX = 0x034,
    REG_QUEUE_NUM = 0x038,
    REG_QUEUE_READY = 0x044,
    REG_QUEUE_NOTIFY = 0x050,
    REG_STATUS = 0x070,
    REG_QUEUE_DESC_LOW = 0x080,
    REG_QUEUE_DESC_HIGH = 0x084,
    REG_QUEUE_DRIVER_LOW = 0x090,
    REG_QUEUE_DRIVER_HIGH = 0x094,
    REG_QUEUE_DEVICE_LOW = 0x0a0,
    REG_QUEUE_DEVICE_HIGH = 0x0a4,
};
#define MAGIC 0x74726976u /* "virt" */

/* Device status bits. */
enum {
    STATUS_ACKNOWLEDGE = 1,
    STATUS_DRIVER = 2,
    STATUS_DRIVER_OK = 4,
    STATUS_FEATURES_OK = 8,
    STATUS_NEEDS_RESET = 64,
    STATUS_FAILED = 128,
};
/* VIRTIO_F_VERSION_1: bit 32, that is bit 0 of the second feature word. */
#define FEATURE_VERSION_1_HIGH 1u
/* A descriptor the device writes into. */
#define DESC_F_WRITE 2

/* The split virtqueue, laid out in one page: descriptors, then the driver ring, then the device
 * ring, each at its required alignment. */
struct desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};
struct avail {
    uint16_t flags;
    uint16_t idx;
    uint16_t ring[QUEUE_SIZE];
    uint16_t used_event;
};
struct used_elem {
    uint32_t id;
    uint32_t len;
};
struct used {
    uint16_t flags;
    uint16_t idx;
    struct used_elem ring[QUEUE_SIZE];
    uint16_t avail_event;
};
struct queue_page {
    struct desc desc[QUEUE_SIZE];
    struct avail avail __attribute__((aligned(2)));
    struct used used __attribute__((aligned(4)));
};
static_assert(sizeof(struct desc) == 16, "a virtio descriptor is 16 bytes");
static_assert(sizeof(struct queue_page) <= PAGE_SIZE, "the queue fits one page");

/* A DMA buffer mapped into this program's memory. */
struct mapped {
    mica_hw_dma_handle_t handle;
    void *memory;
    uint64_t bus;
};

/* The initialized device. */
struct rng {
    char name[64];
    mica_hw_mmio_handle_t window;
    mica_hw_irq_handle_t irq;
    struct mapped queue;
    struct mapped data;
    volatile struct queue_page *q;
    uint16_t next_avail;
    uint16_t next_used;
};

/* Prints what failed and the kernel's message, and frees the message. */
static void hw_failed(const char *what, mica_hw_types_error_t *e) {
    fprintf(stderr, NAME ": %s: %.*s\n", what, (int)e->message.len, (const char *)e->message.ptr);
    mica_hw_types_error_free(e);
}

static bool reg_read(struct rng *rng, uint32_t offset, uint32_t *value, const char *what) {
    uint64_t v;
    mica_hw_types_error_t e;
    if (!mica_hw_mmio_read(rng->window, offset, 4, &v, &e)) {
        hw_failed(what, &e);
        return false;
    }
    *value = (uint32_t)v;
    return true;
}

static bool reg_write(struct rng *rng, uint32_t offset, uint32_t value, const char *what) {
    mica_hw_types_error_t e;
    if (!mica_hw_mmio_write(rng->window, offset, 4, value, &e)) {
        hw_failed(what, &e);
        return false;
    }
    return true;
}

/* Tells the device the driver gave up on it (it stays so until the kernel resets it). */
static void fail(struct rng *rng) {
    reg_write(rng, REG_STATUS, STATUS_FAILED, "setting FAILED");
}

/* A zeroed DMA buffer of `size` bytes (a multiple of the page size) mapped into memory. */
static bool mapped_allocate(uint32_t size, struct mapped *out, const char *what) {
    mica_hw_types_error_t e;
    if (!mica_hw_dma_allocate(size, &out->handle, &e)) {
        hw_failed(what, &e);
        return false;
    }
    out->memory = aligned_alloc(PAGE_SIZE, size);
    if (out->memory == NULL) {
        fprintf(stderr, NAME ": %s: no memory to map the buffer into\n", what);
        return false;
    }
    /* In a wasm32 program a pointer is its offset in linear memory. */
    if (!mica_hw_dma_map_into_memory(out->handle, (uint32_t)(uintptr_t)out->memory, &e) ||
        !mica_hw_dma_bus_address(out->handle, &out->bus, &e)) {
        hw_failed(what, &e);
        return false;
    }
    return true;
}

/* Writes a 64-bit bus address into a low/high register pair. */
static bool reg_write_address(struct rng *rng, uint32_t low, uint64_t address, const char *what) {
    return reg_write(rng, low, (uint32_t)address, what) && reg_write(rng, low + 4, (uint32_t)(address >> 32), what);
}

/* The name of the first granted entropy device, into `name`. */
static bool find_device(char *name, size_t size) {
    mica_hw_device_list_device_info_t granted;
    mica_hw_device_granted(&granted);
    bool found = false;
    for (size_t i = 0; i < granted.len && !found; i++) {
        mica_hw_device_device_info_t *d = &granted.ptr[i];
        if (d->device_id == VIRTIO_ID_ENTROPY && d->bus == MICA_HW_DEVICE_BUS_VIRTIO_MMIO && d->name.len < size) {
            memcpy(name, d->name.ptr, d->name.len);
            name[d->name.len] = '\0';
            found = true;
        }
    }
    mica_hw_device_list_device_info_free(&granted);
    if (!found) {
        fprintf(stderr, NAME ": no virtio-rng device is granted to this component\n");
    }
    return found;
}

/* Claims, initializes and starts the device (virtio 1.x, section 3.1.1). */
static bool start(struct rng *rng) {
    memset(rng, 0, sizeof *rng);
    if (!find_device(rng->name, sizeof rng->name)) {
        return false;
    }
    mica_string_t name;
    mica_string_set(&name, rng->name);
    mica_hw_device_claimed_t claimed;
    mica_hw_types_error_t e;
    if (!mica_hw_device_claim(&name, &claimed, &e)) {
        hw_failed("claiming the device", &e);
        return false;
    }
    rng->window = claimed.window;
    rng->irq = claimed.irq;

    uint32_t magic, version, id;
    if (!reg_read(rng, REG_MAGIC, &magic, "reading MagicValue") ||
        !reg_read(rng, REG_VERSION, &version, "reading Version") ||
        !reg_read(rng, REG_DEVICE_ID, &id, "reading DeviceID")) {
        return false;
    }
    if (magic != MAGIC || version != 2 || id != VIRTIO_ID_ENTROPY) {
        fprintf(stderr, NAME ": %s is not a virtio-mmio version 2 entropy device (magic %#x, version %u, id %u)\n",
                rng->name, magic, version, id);
        return false;
    }
    uint32_t status = 0;
    if (!reg_write(rng, REG_STATUS, 0, "resetting") ||
        !reg_write(rng, REG_STATUS, status |= STATUS_ACKNOWLEDGE, "setting ACKNOWLEDGE") ||
        !reg_write(rng, REG_STATUS, status |= STATUS_DRIVER, "setting DRIVER")) {
        return false;
    }
    uint32_t high;
    if (!reg_write(rng, REG_DEVICE_FEATURES_SEL, 1, "selecting feature word 1") ||
        !reg_read(rng, REG_DEVICE_FEATURES, &high, "reading features")) {
        return false;
    }
    if (!(high & FEATURE_VERSION_1_HIGH)) {
        fprintf(stderr, NAME ": %s does not offer VIRTIO_F_VERSION_1\n", rng->name);
        fail(rng);
        return false;
    }
    /* Only VERSION_1: the entropy device has no features of its own. */
    if (!reg_write(rng, REG_DRIVER_FEATURES_SEL, 0, "selecting feature word 0") ||
        !reg_write(rng, REG_DRIVER_FEATURES, 0, "writing features") ||
        !reg_write(rng, REG_DRIVER_FEATURES_SEL, 1, "selecting feature word 1") ||
        !reg_write(rng, REG_DRIVER_FEATURES, FEATURE_VERSION_1_HIGH, "writing features") ||
        !reg_write(rng, REG_STATUS, status |= STATUS_FEATURES_OK, "setting FEATURES_OK") ||
        !reg_read(rng, REG_STATUS, &status, "reading Status")) {
        return false;
    }
    if (!(status & STATUS_FEATURES_OK)) {
        fprintf(stderr, NAME ": %s did not accept the features\n", rng->name);
        fail(rng);
        return false;
    }

    uint32_t max, ready;
    if (!reg_write(rng, REG_QUEUE_SEL, 0, "selecting queue 0") ||
        !reg_read(rng, REG_QUEUE_NUM_MAX, &max, "reading QueueNumMax") ||
        !reg_read(rng, REG_QUEUE_READY, &ready, "reading QueueReady")) {
        return false;
    }
    if (max < QUEUE_SIZE || ready != 0) {
        fprintf(stderr, NAME ": %s: queue 0 cannot be set up (at most %u entries, ready %u)\n", rng->name, max, ready);
        fail(rng);
        return false;
    }
    if (!mapped_allocate(PAGE_SIZE, &rng->queue, "allocating the queue") ||
        !mapped_allocate(MAX_BYTES, &rng->data, "allocating the entropy buffer")) {
        fail(rng);
        return false;
    }
    rng->q = rng->queue.memory;
    uint64_t q = rng->queue.bus;
    if (!reg_write(rng, REG_QUEUE_NUM, QUEUE_SIZE, "writing QueueNum") ||
        !reg_write_address(rng, REG_QUEUE_DESC_LOW, q + offsetof(struct queue_page, desc), "writing QueueDesc") ||
        !reg_write_address(rng, REG_QUEUE_DRIVER_LOW, q + offsetof(struct queue_page, avail), "writing QueueDriver") ||
        !reg_write_address(rng, REG_QUEUE_DEVICE_LOW, q + offsetof(struct queue_page, used), "writing QueueDevice") ||
        !reg_write(rng, REG_QUEUE_READY, 1, "writing QueueReady") ||
        !reg_write(rng, REG_STATUS, status | STATUS_DRIVER_OK, "setting DRIVER_OK")) {
        return false;
    }
    return true;
}

/* Waits for the device to return the chain in flight; its length, or -1 when the device
 * failed or took too long. */
static int64_t wait_used(struct rng *rng) {
    for (;;) {
        if (rng->q->used.idx != rng->next_used) {
            volatile struct used_elem *elem = &rng->q->used.ring[rng->next_used % QUEUE_SIZE];
            uint32_t head = elem->id, len = elem->len;
            rng->next_used++;
            if (head != 0) {
                fprintf(stderr, NAME ": the device returned descriptor %u, not the one in flight (0)\n", head);
                return -1;
            }
            return len;
        }
        uint64_t timeout = DEVICE_TIMEOUT_NS;
        uint32_t causes;
        mica_hw_types_error_t e;
        if (!mica_hw_irq_wait(rng->irq, &timeout, &causes, &e)) {
            /* One last look: the chain may be back without an interrupt having come. */
            if (e.code == MICA_HW_TYPES_ERROR_CODE_TIMED_OUT && rng->q->used.idx != rng->next_used) {
                mica_hw_types_error_free(&e);
                continue;
            }
            hw_failed("waiting for the device", &e);
            return -1;
        }
        uint32_t status;
        if (!reg_read(rng, REG_STATUS, &status, "reading Status")) {
            return -1;
        }
        if (status & STATUS_NEEDS_RESET) {
            fprintf(stderr, NAME ": %s needs a reset\n", rng->name);
            return -1;
        }
    }
}

/* Fills the first `len` bytes of the data buffer from the device; false when it failed. */
static bool fill(struct rng *rng, uint32_t len) {
    uint32_t got = 0;
    unsigned empty_returns = 0;
    while (got < len) {
        rng->q->desc[0] = (struct desc){.addr = rng->data.bus + got, .len = len - got, .flags = DESC_F_WRITE};
        rng->q->avail.ring[rng->next_avail % QUEUE_SIZE] = 0;
        rng->q->avail.idx = ++rng->next_avail;
        if (!reg_write(rng, REG_QUEUE_NOTIFY, 0, "notifying the device")) {
            return false;
        }
        int64_t written = wait_used(rng);
        if (written < 0) {
            return false;
        }
        if (written == 0) {
            if (++empty_returns == MAX_EMPTY_RETURNS) {
                fprintf(stderr, NAME ": the device returned no bytes %d times in a row\n", MAX_EMPTY_RETURNS);
                return false;
            }
            continue;
        }
        empty_returns = 0;
        got += (uint32_t)written < len - got ? (uint32_t)written : len - got;
    }
    return true;
}

/* The byte count a request asks for, or 0 (and why, on stderr) when it is malformed. */
static uint32_t decode_request(uint64_t number, const uint8_t *bytes, uint32_t len) {
    if (len != 4) {
        fprintf(stderr, NAME ": request %llu refused: %u bytes, not a 4-byte count\n", (unsigned long long)number, len);
        return 0;
    }
    uint32_t count = (uint32_t)bytes[0] | (uint32_t)bytes[1] << 8 | (uint32_t)bytes[2] << 16 | (uint32_t)bytes[3] << 24;
    if (count == 0 || count > MAX_BYTES) {
        fprintf(stderr, NAME ": request %llu refused: %u bytes asked for, not 1 to %d\n", (unsigned long long)number,
                count, MAX_BYTES);
        return 0;
    }
    return count;
}

static mica_kernel_ipc_span_t span_of(const void *p, uint32_t len) {
    return (mica_kernel_ipc_span_t){.offset = (uint32_t)(uintptr_t)p, .len = len};
}

static uint8_t request[MAX_MESSAGE_BYTES];
static uint32_t handles[MAX_MESSAGE_HANDLES];

/* Closes the handles a message brought: this driver takes none. */
static void drop_handles(uint32_t count) {
    for (uint32_t i = 0; i < count && i < MAX_MESSAGE_HANDLES; i++) {
        mica_kernel_ipc_error_t e;
        if (!mica_kernel_ipc_close(handles[i], &e)) {
            mica_kernel_ipc_error_free(&e);
        }
    }
}

/* Whether `code` means every client has gone; otherwise says what failed. */
static bool clients_gone(mica_kernel_ipc_error_code_t code) {
    if (code == MICA_KERNEL_IPC_ERROR_CODE_PEER_CLOSED) {
        return true;
    }
    fprintf(stderr, NAME ": receive failed (error code %u)\n", code);
    exit(1);
}

int main(void) {
    struct rng rng;
    if (!start(&rng)) {
        fprintf(stderr, NAME ": cannot start the device\n");
        return 1;
    }
    printf(NAME ": %s ready (queue size %d)\n", rng.name, QUEUE_SIZE);
    fflush(stdout);

    mica_string_t connection;
    mica_string_set(&connection, "entropy");
    mica_kernel_ipc_handle_t end;
    mica_kernel_ipc_error_t e;
    if (!mica_kernel_ipc_connect(&connection, &end, &e)) {
        fprintf(stderr, NAME ": cannot connect \"entropy\": %.*s\n", (int)e.message.len, (const char *)e.message.ptr);
        return 1;
    }
    mica_kernel_ipc_span_t buffer = span_of(request, sizeof request);
    mica_kernel_ipc_span_t handle_span = span_of(handles, sizeof handles);
    mica_kernel_ipc_arrival_t arrival;
    mica_kernel_ipc_error_code_t code;
    uint64_t served = 0, bytes = 0;
    bool arrived = mica_kernel_ipc_receive_into(end, &buffer, &handle_span, NULL, &arrival, &code);
    for (;;) {
        if (!arrived && clients_gone(code)) {
            break;
        }
        drop_handles(arrival.handles);
        if (!arrival.call.is_some || arrival.bytes > sizeof request) {
            /* Not a request (or one over the kernel's own limit): nothing to answer. */
            arrived = mica_kernel_ipc_receive_into(end, &buffer, &handle_span, NULL, &arrival, &code);
            continue;
        }
        uint64_t call = arrival.call.val;
        served++;
        uint32_t count = decode_request(served, request, arrival.bytes);
        mica_kernel_ipc_span_t reply = span_of(rng.data.memory, 0);
        if (count != 0) {
            if (!fill(&rng, count)) {
                fprintf(stderr, NAME ": request %llu: the device failed; ending, so that the device is reset\n",
                        (unsigned long long)served);
                fail(&rng);
                mica_kernel_ipc_reply_span(end, call, &reply, &code);
                return 1;
            }
            reply.len = count;
        }
        bytes += reply.len;
        mica_kernel_ipc_tuple2_result_void_error_code_result_arrival_error_code_t step;
        mica_kernel_ipc_reply_receive(end, call, &reply, &buffer, &handle_span, NULL, &step);
        if (step.f0.is_err) {
            printf(NAME ": reply to call %llu not delivered (error code %u)\n", (unsigned long long)call, step.f0.val.err);
        }
        arrived = !step.f1.is_err;
        if (arrived) {
            arrival = step.f1.val.ok;
        } else {
            code = step.f1.val.err;
        }
    }
    printf(NAME ": all clients gone after %llu requests (%llu bytes)\n", (unsigned long long)served,
           (unsigned long long)bytes);
    return 0;
}
