/* Polled COM1 output and the isa-debug-exit port. */
#include "guest.h"

#define COM1 0x3f8
#define COM1_LSR (COM1 + 5)
#define LSR_THRE 0x20
#define DEBUG_EXIT_PORT 0x501

/* Output goes out a line at a time with one `rep outsb`: one VM exit per line
 * instead of two per character (an LSR poll and an OUT), which under nested
 * KVM cost ~10 us each and slowed the workload's own progress lines. THRE is
 * polled once per line: the 16550s of our VMM and QEMU take any number of bytes. */
static char line[160];
static unsigned long line_len;

void con_flush(void) {
  if (!line_len) return;
  while (!(inb(COM1_LSR) & LSR_THRE)) {
  }
  const char *p = line;
  unsigned long n = line_len;
  __asm__ volatile("cld; rep outsb" : "+S"(p), "+c"(n) : "d"((uint16_t)COM1) : "memory", "cc");
  line_len = 0;
}

void con_putc(char c) {
  if (c == '\n') {
    line[line_len++] = '\r';
    line[line_len++] = '\n';
    con_flush();
    return;
  }
  line[line_len++] = c;
  if (line_len >= sizeof line - 2) con_flush();
}

void con_write(const char *s) {
  while (*s) con_putc(*s++);
}

static void put_unsigned(uint64_t v, unsigned base, int width, char pad) {
  char buf[24];
  int n = 0;
  do {
    unsigned d = (unsigned)(v % base);
    buf[n++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
    v /= base;
  } while (v);
  while (n < width) buf[n++] = pad;
  while (n) con_putc(buf[--n]);
}

/* printf subset: %s %c %d %u %x with optional zero-pad width and l/ll. */
void con_printf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  for (; *fmt; fmt++) {
    if (*fmt != '%') {
      con_putc(*fmt);
      continue;
    }
    fmt++;
    char pad = ' ';
    int width = 0, longs = 0;
    if (*fmt == '0') pad = '0';
    while (*fmt >= '0' && *fmt <= '9') width = width * 10 + (*fmt++ - '0');
    while (*fmt == 'l') longs++, fmt++;
    switch (*fmt) {
      case 's': con_write(va_arg(ap, const char *)); break;
      case 'c': con_putc((char)va_arg(ap, int)); break;
      case 'd': {
        int64_t v = longs ? va_arg(ap, int64_t) : va_arg(ap, int);
        if (v < 0) con_putc('-'), v = -v;
        put_unsigned((uint64_t)v, 10, width, pad);
        break;
      }
      case 'u': put_unsigned(longs ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), 10, width, pad); break;
      case 'x': put_unsigned(longs ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), 16, width, pad); break;
      case '%': con_putc('%'); break;
      default: con_putc('?'); break;
    }
  }
  va_end(ap);
}

_Noreturn void guest_exit(int code) {
  con_flush();
  outb(DEBUG_EXIT_PORT, (uint8_t)code);
  /* Not reached under a VMM with the exit device; without one, spin. */
  for (;;) __asm__ volatile("pause");
}
