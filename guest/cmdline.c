/* The PVH command line: space-separated key=value tokens. */
#include "guest.h"

static char cmdline_buf[1024];

void cmdline_init(const char *cmdline) {
  size_t i = 0;
  if (cmdline)
    for (; cmdline[i] && i + 1 < sizeof cmdline_buf; i++) cmdline_buf[i] = cmdline[i];
  cmdline_buf[i] = 0;
}

const char *cmdline_raw(void) { return cmdline_buf; }

int str_eq(const char *a, const char *b) {
  while (*a && *a == *b) a++, b++;
  return *a == *b;
}

/* Finds "key=" at a token start; copies the value up to the next space. */
int cmdline_str(const char *key, char *out, size_t out_size) {
  const char *p = cmdline_buf;
  while (*p) {
    while (*p == ' ') p++;
    const char *k = key, *t = p;
    while (*k && *t == *k) k++, t++;
    if (!*k && *t == '=') {
      size_t n = 0;
      for (t++; *t && *t != ' ' && n + 1 < out_size; t++) out[n++] = *t;
      out[n] = 0;
      return 1;
    }
    while (*p && *p != ' ') p++;
  }
  return 0;
}

int cmdline_u64(const char *key, uint64_t *out) {
  char buf[32];
  if (!cmdline_str(key, buf, sizeof buf)) return 0;
  if (!buf[0]) return -1;
  uint64_t v = 0;
  for (const char *c = buf; *c; c++) {
    if (*c < '0' || *c > '9') return -1;
    v = v * 10 + (uint64_t)(*c - '0');
  }
  *out = v;
  return 1;
}
