/*
 * pam_flux - admit logins of users with a Flux job on this node, and put
 * them into the user's slice.
 *
 * account   Root is admitted at once; an unknown user gets PAM_USER_UNKNOWN.
 *           Anyone else is admitted only if the local broker says the user
 *           has a job in RUN state on this rank: pam.check, answered by the
 *           pam broker module, or job-list.list when that module is not
 *           loaded (ENOSYS).  allow-guest-user also admits guests of a
 *           sub-instance started by a job of the instance owner.
 * session   For a job owner that the account step of this PAM handle
 *           admitted (pam_set_data), and with pam.manage-user-slice on:
 *           start PREFIX-PID.scope in user-UID.slice holding this process,
 *           then confirm it with pam.attach, or with the marker under the
 *           per-user lock when the module is not loaded.  On a refusal the
 *           process moves back to its cgroup, the scope is stopped and the
 *           session fails.
 *
 * The protocol is in doc/design.rst, the options and messages in pam_flux(8).
 * The broker makes every decision; this module asks and carries out the
 * answer.  Every wait is bounded by the timeout= option, every failure
 * refuses unless an option says otherwise, and nothing is kept between PAM
 * handles.
 */

#define _GNU_SOURCE
#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>

#include <security/pam_ext.h>
#include <security/pam_modules.h>
#include <security/pam_modutil.h>

#include <flux/core.h>
#include <jansson.h>
#include <systemd/sd-bus.h>

#define DEFAULT_URI "local:///run/flux/local"
#define DEFAULT_SERVICE "sshd"
#define DEFAULT_LOCK_DIR "/run/flux-pam"
#define DEFAULT_SCOPE_PREFIX "flux-pam"
#define DEFAULT_TIMEOUT 10.0
#define SYSTEMD_USER_SERVICE "systemd-user"
#define DATA_ADMITTED "pam_flux_admitted"
#define CHECK_MAX_JOBS 16        /* pam.check lists at most this many jobs */
#define JOBS_TEXT (CHECK_MAX_JOBS * 24)  /* their F58 IDs, comma-joined */
#define FLUX_JOB_STATE_RUN 16
#define LOG_QUIET (-1)
#define MAX_MESSAGE 480          /* text shown to the user, bytes */
#define MARKER_READ 1024         /* bytes of the marker that are read */
#define SCOPE_PREFIX_MAX 200

#define SYSTEMD_DEST "org.freedesktop.systemd1"
#define SYSTEMD_PATH "/org/freedesktop/systemd1"
#define SYSTEMD_MANAGER "org.freedesktop.systemd1.Manager"

enum action { ACTION_DENY, ACTION_IGNORE, ACTION_ALLOW };

struct options {
    enum action no_jobs;
    enum action generic_failure;
    const char *service;         /* "*": every service */
    int log_level;               /* lines above this priority are dropped */
    bool allow_guest_user;
    const char *lock_dir;
    const char *scope_prefix;
    const char *config;          /* accepted and ignored (see pam_flux(8)) */
    double timeout;              /* seconds, > 0 */
};

/* One pam_sm_* call. */
struct call {
    pam_handle_t *pamh;
    int flags;
    struct options opt;
};

/* An error: errno and a text that names what failed. */
struct err {
    int errnum;
    char text[512];
};

/* What the account step leaves the session step (pam_set_data). */
struct admitted {
    char *user;
    uid_t uid;
    int manage;                  /* pam.manage-user-slice: 0, 1, -1 unknown */
    char *jobs;                  /* the user's job IDs here (F58, a,b,c) */
    int nlisted;                 /* how many jobs lists */
    int njobs;                   /* how many jobs the user has here */
};

enum kind { VERDICT_NONE, VERDICT_OWNER, VERDICT_GUEST, VERDICT_REFUSED };

/* What the broker says about a user. */
struct verdict {
    enum kind kind;
    const char *source;          /* "pam.check" or "job-list" */
    char jobs[JOBS_TEXT];        /* OWNER: job IDs; GUEST: the job */
    int nlisted;                 /* OWNER: how many jobs lists */
    int njobs;                   /* OWNER: how many jobs the user has here */
    int manage;
    char message[MAX_MESSAGE + 1];  /* REFUSED: the text shown */
};

/* ------------------------------------------------------------------ util */

static void set_err (struct err *e, int errnum, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));

static void set_err (struct err *e, int errnum, const char *fmt, ...)
{
    va_list ap;

    e->errnum = errnum ? errnum : EIO;
    va_start (ap, fmt);
    (void)vsnprintf (e->text, sizeof (e->text), fmt, ap);
    va_end (ap);
}

/* "TEXT (ENAME)" for the log. */
static const char *err_str (const struct err *e, char *buf, size_t size)
{
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 32)
    const char *name = strerrorname_np (e->errnum);
    if (name) {
        (void)snprintf (buf, size, "%s (%s)", e->text, name);
        return buf;
    }
#endif
    (void)snprintf (buf, size, "%s (errno %d)", e->text, e->errnum);
    return buf;
}

static double now (void)
{
    struct timespec ts;

    (void)clock_gettime (CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Seconds as whole units of 1/scale s for a system call, saturated at a
 * day: timeout= may be any finite duration, the conversion may not overflow.
 */
static long long whole (double seconds, double scale)
{
    return (long long)((seconds < 86400. ? seconds : 86400.) * scale);
}

static void pause_for (double seconds)
{
    struct timespec ts;

    if (seconds <= 0)
        return;
    ts.tv_sec = (time_t)seconds;
    ts.tv_nsec = (long)((seconds - ts.tv_sec) * 1e9);
    (void)nanosleep (&ts, NULL);
}

/* Copy text to be shown to a user: at most MAX_MESSAGE bytes, control
 * characters (terminal escapes) replaced by '?'.
 */
static void copy_message (char *dst, size_t size, const char *src)
{
    size_t i;

    for (i = 0; src[i] && i + 1 < size; i++) {
        unsigned char ch = (unsigned char)src[i];
        dst[i] = (ch < 0x20 || ch == 0x7f) ? '?' : (char)ch;
    }
    dst[i] = '\0';
}

static bool is_uint (json_t *o)
{
    return json_is_integer (o) && json_integer_value (o) >= 0;
}

/* ------------------------------------------------------------------ log */

static void flog (const struct call *c, int priority, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));

/* Log to syslog (LOG_AUTHPRIV, "pam_flux(SERVICE:TYPE): ") if priority
 * passes log_level.
 */
static void flog (const struct call *c, int priority, const char *fmt, ...)
{
    va_list ap;

    if (priority > c->opt.log_level)
        return;
    va_start (ap, fmt);
    pam_vsyslog (c->pamh, priority, fmt, ap);
    va_end (ap);
}

/* Tell the user (PAM_ERROR_MSG) unless the application asked for silence. */
static void tell (const struct call *c, const char *text)
{
    int rc;

    if ((c->flags & PAM_SILENT))
        return;
    if ((rc = pam_error (c->pamh, "%s", text)) != PAM_SUCCESS)
        flog (c, LOG_ERR, "unable to converse with app: %s",
              pam_strerror (c->pamh, rc));
}

/* -------------------------------------------------------------- options */

static const struct {
    const char *name;
    int priority;
} log_levels[] = {
    { "quiet", LOG_QUIET },    { "fatal", LOG_CRIT },
    { "error", LOG_ERR },      { "warning", LOG_WARNING },
    { "notice", LOG_NOTICE },  { "info", LOG_INFO },
    { "verbose", LOG_DEBUG },  { "debug", LOG_DEBUG },
    { "debug2", LOG_DEBUG },   { "debug3", LOG_DEBUG },
    { "debug4", LOG_DEBUG },   { "debug5", LOG_DEBUG },
};

#define LOG_LEVEL_NAMES \
    "quiet|fatal|error|warning|notice|info|verbose|debug|debug2|debug3" \
    "|debug4|debug5"

static bool only_chars (const char *s, const char *extra)
{
    for (; *s; s++)
        if (!isalnum ((unsigned char)*s) && !strchr (extra, *s))
            return false;
    return true;
}

static bool is_digits (const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isdigit ((unsigned char)s[i]))
            return false;
    return true;
}

/* strtod()-like decimal: "12", "1.", "1.5e3", ".5" (RFC 23). */
static bool is_number (const char *s, size_t n)
{
    size_t mant = n, dot;
    const char *e = memchr (s, 'e', n);

    if (!e)
        e = memchr (s, 'E', n);
    if (e) {
        const char *x = e + 1;
        size_t xn = n - (size_t)(x - s);
        if (xn > 0 && (*x == '+' || *x == '-')) {
            x++;
            xn--;
        }
        if (!is_digits (x, xn))
            return false;
        mant = (size_t)(e - s);
    }
    for (dot = 0; dot < mant && s[dot] != '.'; dot++)
        ;
    if (dot == mant)
        return is_digits (s, mant);
    if (dot > 0)
        return is_digits (s, dot)
               && (dot + 1 == mant || is_digits (s + dot + 1, mant - dot - 1));
    return is_digits (s + 1, mant - 1);
}

/* Parse an RFC 23 Flux Standard Duration that must be finite and > 0. */
static int parse_fsd (const char *text, double *seconds, char *why, size_t size)
{
    static const struct {
        const char *suffix;
        double scale;
    } units[] = { { "ms", 1e-3 }, { "s", 1. }, { "m", 60. },
                  { "h", 3600. }, { "d", 86400. } };
    size_t n = strlen (text);
    double scale = 1.;
    char num[64];
    double value;

    if (!strcasecmp (text, "inf") || !strcasecmp (text, "infinity")) {
        (void)snprintf (why, size,
                        "\"%s\" is infinite, which is not allowed here", text);
        return -1;
    }
    if (text[0] == '-') {
        (void)snprintf (why, size, "\"%s\" is negative", text);
        return -1;
    }
    for (size_t i = 0; i < sizeof (units) / sizeof (units[0]); i++) {
        size_t sl = strlen (units[i].suffix);
        if (n > sl && !strcmp (text + n - sl, units[i].suffix)) {
            n -= sl;
            scale = units[i].scale;
            break;
        }
    }
    if (n >= sizeof (num) || !is_number (text, n)) {
        (void)snprintf (why, size, "\"%s\" is not a Flux Standard Duration",
                        text);
        return -1;
    }
    memcpy (num, text, n);
    num[n] = '\0';
    value = strtod (num, NULL) * scale;
    if (!isfinite (value)) {
        (void)snprintf (why, size, "\"%s\" is out of range", text);
        return -1;
    }
    if (value <= 0) {
        (void)snprintf (why, size, "must be greater than zero");
        return -1;
    }
    *seconds = value;
    return 0;
}

/* Parse the module arguments into opt; on a bad one log it (LOG_ERR,
 * whatever log_level says) and return -1.  A later option overrides an
 * earlier one.
 */
static int parse_options (pam_handle_t *pamh, int argc, const char **argv,
                          struct options *opt)
{
    opt->no_jobs = ACTION_DENY;
    opt->generic_failure = ACTION_DENY;
    opt->service = DEFAULT_SERVICE;
    opt->log_level = LOG_INFO;
    opt->allow_guest_user = false;
    opt->lock_dir = DEFAULT_LOCK_DIR;
    opt->scope_prefix = DEFAULT_SCOPE_PREFIX;
    opt->config = NULL;
    opt->timeout = DEFAULT_TIMEOUT;

    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        const char *eq = strchr (arg, '=');
        int len = eq ? (int)(eq - arg) : (int)strlen (arg);
        const char *value = eq ? eq + 1 : NULL;
        char why[256];

#define NAMED(s) (len == (int)strlen (s) && !strncmp (arg, s, (size_t)len))
        if (NAMED ("debug") || NAMED ("allow-guest-user")) {
            if (eq) {
                pam_syslog (pamh, LOG_ERR, "option %s: %.*s takes no value",
                            arg, len, arg);
                return -1;
            }
            if (NAMED ("debug"))
                opt->log_level = LOG_DEBUG;
            else
                opt->allow_guest_user = true;
            continue;
        }
        if (!(NAMED ("action_no_jobs") || NAMED ("action_generic_failure")
              || NAMED ("service") || NAMED ("log_level")
              || NAMED ("lock-dir") || NAMED ("scope-prefix")
              || NAMED ("config") || NAMED ("timeout"))) {
            pam_syslog (pamh, LOG_ERR, "unrecognized option: %s", arg);
            return -1;
        }
        if (!value || !*value) {
            pam_syslog (pamh, LOG_ERR, "option %s: %.*s needs %.*s=VALUE",
                        arg, len, arg, len, arg);
            return -1;
        }
        if (NAMED ("action_no_jobs")) {
            if (!strcmp (value, "deny"))
                opt->no_jobs = ACTION_DENY;
            else if (!strcmp (value, "ignore"))
                opt->no_jobs = ACTION_IGNORE;
            else
                goto bad_choice;
        }
        else if (NAMED ("action_generic_failure")) {
            if (!strcmp (value, "deny"))
                opt->generic_failure = ACTION_DENY;
            else if (!strcmp (value, "ignore"))
                opt->generic_failure = ACTION_IGNORE;
            else if (!strcmp (value, "allow"))
                opt->generic_failure = ACTION_ALLOW;
            else
                goto bad_choice;
        }
        else if (NAMED ("service")) {
            if (strcmp (value, "*") && !only_chars (value, "_.+-")) {
                pam_syslog (pamh, LOG_ERR,
                            "option %s: not a PAM service name or *", arg);
                return -1;
            }
            opt->service = value;
        }
        else if (NAMED ("log_level")) {
            size_t j, n = sizeof (log_levels) / sizeof (log_levels[0]);
            for (j = 0; j < n; j++)
                if (!strcmp (value, log_levels[j].name))
                    break;
            if (j == n) {
                pam_syslog (pamh, LOG_ERR,
                            "option %s: value must be one of " LOG_LEVEL_NAMES,
                            arg);
                return -1;
            }
            opt->log_level = log_levels[j].priority;
        }
        else if (NAMED ("lock-dir") || NAMED ("config")) {
            if (value[0] != '/') {
                pam_syslog (pamh, LOG_ERR, "option %s: not an absolute path",
                            arg);
                return -1;
            }
            if (strlen (value) > PATH_MAX / 2) {
                pam_syslog (pamh, LOG_ERR, "option %.*s=...: path too long",
                            len, arg);
                return -1;
            }
            if (NAMED ("lock-dir"))
                opt->lock_dir = value;
            else
                opt->config = value;
        }
        else if (NAMED ("scope-prefix")) {
            if (!only_chars (value, ":_.\\-")
                || strlen (value) > SCOPE_PREFIX_MAX) {
                pam_syslog (pamh, LOG_ERR,
                            "option %s: not usable in a systemd unit name"
                            " (letters, digits, ':', '_', '.', '-', '\\')",
                            arg);
                return -1;
            }
            opt->scope_prefix = value;
        }
        else { /* timeout */
            if (parse_fsd (value, &opt->timeout, why, sizeof (why)) < 0) {
                pam_syslog (pamh, LOG_ERR, "option %s: %s", arg, why);
                return -1;
            }
        }
        continue;
bad_choice:
        pam_syslog (pamh, LOG_ERR, "option %s: value must be one of %s", arg,
                    NAMED ("action_no_jobs") ? "deny|ignore"
                                             : "deny|ignore|allow");
        return -1;
#undef NAMED
    }
    return 0;
}

/* Parse the options and log what deserves a warning.  -1: bad options. */
static int call_init (struct call *c, pam_handle_t *pamh, int flags, int argc,
                      const char **argv)
{
    c->pamh = pamh;
    c->flags = flags;
    if (parse_options (pamh, argc, argv, &c->opt) < 0)
        return -1;
    if (c->opt.config)
        flog (c, LOG_WARNING,
              "option config=%s is ignored: pam.manage-user-slice comes from"
              " the broker (pam.check, or config.get when the pam module is"
              " not loaded); remove the option",
              c->opt.config);
    return 0;
}

static const char *get_service (const struct call *c)
{
    const void *item = NULL;

    if (pam_get_item (c->pamh, PAM_SERVICE, &item) != PAM_SUCCESS || !item)
        return NULL;
    return item;
}

static bool service_matches (const struct call *c, const char *service)
{
    return !strcmp (c->opt.service, "*")
           || (service && !strcmp (service, c->opt.service));
}

/* PAM_USER and its uid.  PAM_USER_UNKNOWN (logged) if either is missing. */
static int get_user (const struct call *c, const char **user, uid_t *uid)
{
    const void *item = NULL;
    const struct passwd *pw;

    if (pam_get_item (c->pamh, PAM_USER, &item) != PAM_SUCCESS || !item
        || !*(const char *)item) {
        flog (c, LOG_ERR, "PAM_USER is not set");
        return PAM_USER_UNKNOWN;
    }
    *user = item;
    if (!(pw = pam_modutil_getpwnam (c->pamh, *user))) {
        flog (c, LOG_ERR, "user %s does not exist", *user);
        return PAM_USER_UNKNOWN;
    }
    *uid = pw->pw_uid;
    return PAM_SUCCESS;
}

/* --------------------------------------------------------------- broker */

/* The local broker's URI: FLUX_URI from the process environment, as
 * sshd was started (not the PAM environment, which pam_env may fill from
 * the user's files), else the system instance's.
 */
static const char *broker_uri (void)
{
    const char *uri = getenv ("FLUX_URI");

    return uri && *uri ? uri : DEFAULT_URI;
}

/* Connect to the broker listening on the local:// socket of uri.
 *
 * The socket is connected here, the broker's one-byte greeting awaited,
 * both within the timeout, and the connection then handed to
 * libflux-core's fd:// connector: its local:// connector retries connect()
 * for about 0.5 s and waits for the greeting without a bound.
 */
static flux_t *broker_open (const struct call *c, const char *uri,
                            struct err *e)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    const char *path;
    double deadline = now () + c->opt.timeout;
    double backoff = 0.002;
    flux_error_t error;
    char fduri[32];
    flux_t *h;
    int fd;

    if (strncmp (uri, "local://", 8) != 0 || !uri[8]) {
        set_err (e, EINVAL, "%s is not a local:// URI of the node's broker",
                 uri);
        return NULL;
    }
    path = uri + 8;
    if (strlen (path) >= sizeof (sun.sun_path)) {
        set_err (e, ENAMETOOLONG, "%s: socket path too long", uri);
        return NULL;
    }
    strcpy (sun.sun_path, path);
    fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        set_err (e, errno, "socket: %s", strerror (errno));
        return NULL;
    }
    while (connect (fd, (struct sockaddr *)&sun, sizeof (sun)) < 0) {
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN || now () >= deadline) {
            set_err (e, errno, "cannot connect to %s: %s", uri,
                     strerror (errno));
            goto error;
        }
        pause_for (backoff); /* the broker's listen backlog is full */
        backoff = backoff < 0.05 ? backoff * 2 : backoff;
    }
    for (;;) {
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        double left = deadline - now ();
        int n;

        if (left <= 0) {
            set_err (e, ETIMEDOUT, "connect to %s: no answer within %gs", uri,
                     c->opt.timeout);
            goto error;
        }
        n = poll (&pfd, 1, (int)whole (left, 1e3) + 1);
        if (n > 0)
            break;
        if (n < 0 && errno != EINTR) {
            set_err (e, errno, "connect to %s: %s", uri, strerror (errno));
            goto error;
        }
    }
    (void)snprintf (fduri, sizeof (fduri), "fd://%d", fd);
    if (!(h = flux_open_ex (fduri, 0, &error))) {
        int errnum = errno;
        /* libflux closes the descriptor only once it has adopted it */
        if (fcntl (fd, F_GETFD) >= 0)
            (void)close (fd);
        /* what the broker said instead of its greeting: an errno */
        if (errnum == ECONNRESET)
            set_err (e, errnum, "%s closed the connection", uri);
        else if (errnum == ENOMEM || errnum == EINVAL)
            set_err (e, errnum, "cannot connect to %s: %s", uri,
                     error.text[0] ? error.text : strerror (errnum));
        else
            set_err (e, errnum, "%s refused the connection: %s", uri,
                     strerror (errnum));
        return NULL;
    }
    return h;
error:
    (void)close (fd);
    return NULL;
}

/* flux_rpc_pack() writes the request to the socket at once: a broker that
 * has gone away would raise SIGPIPE in the application (sshd, login).
 * Block it for the call and drop one that this call caused.
 */
static flux_future_t *send_request (flux_t *h, const char *topic,
                                    json_t *payload)
{
    sigset_t pipe_set, old, pending;
    bool was_pending;
    flux_future_t *f;
    int errnum;

    sigemptyset (&pipe_set);
    sigaddset (&pipe_set, SIGPIPE);
    sigemptyset (&pending);
    (void)sigpending (&pending);
    was_pending = sigismember (&pending, SIGPIPE);
    (void)pthread_sigmask (SIG_BLOCK, &pipe_set, &old);
    f = flux_rpc_pack (h, topic, FLUX_NODEID_ANY, 0, "O", payload);
    errnum = errno;
    if (!was_pending) {
        struct timespec zero = { 0, 0 };
        sigemptyset (&pending);
        (void)sigpending (&pending);
        if (sigismember (&pending, SIGPIPE))
            (void)sigtimedwait (&pipe_set, NULL, &zero);
    }
    (void)pthread_sigmask (SIG_SETMASK, &old, NULL);
    errno = errnum;
    return f;
}

static void answered (flux_future_t *f, void *arg)
{
    (void)arg;
    flux_reactor_stop (flux_future_get_reactor (f));
}

static void timed_out (flux_reactor_t *r, flux_watcher_t *w, int revents,
                       void *arg)
{
    (void)w;
    (void)revents;
    *(bool *)arg = true;
    flux_reactor_stop (r);
}

/* Ask topic with payload; wait at most the timeout for the answer.  On
 * success *fp is the future (the caller destroys it) and *obj its payload.
 */
static int rpc (const struct call *c, flux_t *h, const char *topic,
                json_t *payload, flux_future_t **fp, json_t **obj,
                struct err *e)
{
    flux_watcher_t *timer = NULL;
    flux_reactor_t *r;
    flux_future_t *f;
    const char *text;
    bool late = false;
    int rc, errnum;

    if (!payload) {
        set_err (e, ENOMEM, "%s: out of memory", topic);
        return -1;
    }
    f = send_request (h, topic, payload);
    json_decref (payload);
    if (!f) {
        set_err (e, errno, "%s: cannot send: %s", topic, strerror (errno));
        return -1;
    }
    /* The handle's own reactor, not flux_future_wait_for(): on a timeout,
     * wait_for's private clone of the handle drops (and leaks) whatever
     * other message arrived meanwhile (libflux-core 0.88).
     */
    r = flux_get_reactor (h);
    if (!r || !(timer = flux_timer_watcher_create (r, c->opt.timeout, 0.,
                                                   timed_out, &late))
        || flux_future_then (f, -1., answered, NULL) < 0) {
        set_err (e, errno, "%s: %s", topic, strerror (errno));
        goto error;
    }
    flux_watcher_start (timer);
    rc = flux_reactor_run (r, 0);
    errnum = errno;
    flux_watcher_destroy (timer);
    timer = NULL;
    if (!flux_future_is_ready (f)) {
        if (late)
            set_err (e, ETIMEDOUT, "%s: no answer within %gs", topic,
                     c->opt.timeout);
        else if (rc < 0)
            set_err (e, errnum, "%s: %s", topic, strerror (errnum));
        else
            set_err (e, EIO, "%s: the connection ended without an answer",
                     topic);
        goto error;
    }
    if (flux_rpc_get_unpack (f, "o", obj) < 0) {
        errnum = errno;
        text = flux_future_error_string (f);
        if (errnum == EPROTO && !text)
            text = "the answer is not a JSON object";
        set_err (e, errnum, "%s: %s", topic, text ? text : strerror (errnum));
        goto error;
    }
    *fp = f;
    return 0;
error:
    flux_watcher_destroy (timer);
    flux_future_destroy (f);
    return -1;
}

/* A broker attribute that is a non-negative integer (attr.get). */
static int attr_uint (const struct call *c, flux_t *h, const char *name,
                      unsigned long *value, struct err *e)
{
    flux_future_t *f;
    json_t *obj;
    const char *s;
    char *end;
    int rc = -1;

    if (rpc (c, h, "attr.get", json_pack ("{s:s}", "name", name), &f, &obj, e)
        < 0)
        return -1;
    s = json_string_value (json_object_get (obj, "value"));
    if (!s) {
        set_err (e, EPROTO, "attr.get %s: no string value", name);
        goto done;
    }
    errno = 0;
    *value = strtoul (s, &end, 10);
    if (errno || !isdigit ((unsigned char)*s) || *end) {
        set_err (e, EPROTO, "broker attribute %s=\"%s\" is not an integer",
                 name, s);
        goto done;
    }
    rc = 0;
done:
    flux_future_destroy (f);
    return rc;
}

/* ----------------------------------------------------------- job-list */

/* Whether rank is in the RFC 22 idset text s ("0-3,7", "[2]"), and
 * whether it is the set's lowest.  -1: not an idset.
 */
static int idset_has (const char *s, unsigned long rank, bool *in, bool *first)
{
    unsigned long lowest = ULONG_MAX;
    size_t n = strlen (s);

    *in = false;
    if (n >= 2 && s[0] == '[' && s[n - 1] == ']') {
        s++;
        n -= 2;
    }
    if (n == 0)
        return -1;
    while (n > 0) {
        const char *comma = memchr (s, ',', n);
        size_t len = comma ? (size_t)(comma - s) : n;
        const char *dash = memchr (s, '-', len);
        size_t alen = dash ? (size_t)(dash - s) : len;
        unsigned long lo, hi;
        char buf[32];

        if (!is_digits (s, alen) || alen >= sizeof (buf))
            return -1;
        memcpy (buf, s, alen);
        buf[alen] = '\0';
        lo = hi = strtoul (buf, NULL, 10);
        if (dash) {
            size_t blen = len - alen - 1;
            if (!is_digits (dash + 1, blen) || blen >= sizeof (buf))
                return -1;
            memcpy (buf, dash + 1, blen);
            buf[blen] = '\0';
            hi = strtoul (buf, NULL, 10);
            if (hi < lo)
                return -1;
        }
        if (lo < lowest)
            lowest = lo;
        if (rank >= lo && rank <= hi)
            *in = true;
        if (!comma)
            break;
        s += len + 1;
        n -= len + 1;
        if (n == 0)
            return -1;
    }
    *first = *in && rank == lowest;
    return 0;
}

/* One job of a job-list answer. */
struct job {
    json_int_t id;
    json_int_t userid;
    bool on_rank;                /* this rank is in the job's ranks */
    bool first;                  /* ... and is its lowest */
    const char *uri;             /* annotations.user.uri, or NULL */
};

/* Validate one job-list entry.  1: a RUN job, 0: another state, -1: bad. */
static int parse_job (json_t *o, unsigned long rank, struct job *job,
                      struct err *e)
{
    json_t *id = json_object_get (o, "id");
    json_t *userid = json_object_get (o, "userid");
    json_t *state = json_object_get (o, "state");
    json_t *uri;
    const char *ranks;

    if (!json_is_object (o)) {
        set_err (e, EPROTO, "job-list.list response: a job is not an object");
        return -1;
    }
    if (!is_uint (id) || !is_uint (userid)) {
        set_err (e, EPROTO, "job-list.list response: a job lacks id or userid");
        return -1;
    }
    job->id = json_integer_value (id);
    job->userid = json_integer_value (userid);
    ranks = json_string_value (json_object_get (o, "ranks"));
    if (!ranks || idset_has (ranks, rank, &job->on_rank, &job->first) < 0) {
        set_err (e, EPROTO, "job-list.list response: job %" JSON_INTEGER_FORMAT
                 " has no ranks", job->id);
        return -1;
    }
    if (state && !(json_is_integer (state)
                   && json_integer_value (state) == FLUX_JOB_STATE_RUN))
        return 0;
    uri = json_object_get (json_object_get (json_object_get (o, "annotations"),
                                            "user"),
                           "uri");
    job->uri = json_string_value (uri);
    return 1;
}

/* "ssh://HOST/PATH" -> "local:///PATH"; -1 for anything else. */
static int uri_to_local (const char *uri, char *buf, size_t size)
{
    const char *slash;

    if (strncmp (uri, "ssh://", 6) != 0)
        return -1;
    if (!(slash = strchr (uri + 6, '/')) || slash[1] == '\0')
        return -1;
    if ((size_t)snprintf (buf, size, "local://%s", slash) >= size)
        return -1;
    return 0;
}

/* A job ID in encoding (flux_job_id_encode), into buf; decimal if that
 * fails. */
static const char *job_id (json_int_t id, const char *encoding, char *buf,
                           size_t len)
{
    if (id < 0
        || flux_job_id_encode ((flux_jobid_t)id, encoding, buf, len) < 0)
        (void)snprintf (buf, len, "%" JSON_INTEGER_FORMAT, id);
    return buf;
}

/* A job ID as flux commands print it (F58). */
static const char *f58 (json_int_t id, char *buf, size_t len)
{
    return job_id (id, "f58", buf, len);
}

/* Does the sub-instance of job let guests in (access.allow-guest-user)? */
static bool guest_allowed (const struct call *c, const struct job *job)
{
    char local[PATH_MAX], es[600], id[32];
    struct err e;
    flux_future_t *f;
    json_t *obj;
    flux_t *sub;
    bool allowed;

    (void)f58 (job->id, id, sizeof (id));

    if (!job->uri || uri_to_local (job->uri, local, sizeof (local)) < 0) {
        flog (c, LOG_ERR, "job %s: cannot use instance URI %s", id,
              job->uri ? job->uri : "(none)");
        return false;
    }
    if (!(sub = broker_open (c, local, &e))) {
        flog (c, LOG_ERR, "job %s: config.get on %s: %s", id, local,
              err_str (&e, es, sizeof (es)));
        return false;
    }
    if (rpc (c, sub, "config.get", json_object (), &f, &obj, &e) < 0) {
        flog (c, LOG_ERR, "job %s: config.get on %s: %s", id, local,
              err_str (&e, es, sizeof (es)));
        flux_close (sub);
        return false;
    }
    allowed = json_is_true (json_object_get (json_object_get (obj, "access"),
                                             "allow-guest-user"));
    flux_future_destroy (f);
    flux_close (sub);
    if (!allowed)
        flog (c, LOG_INFO, "job %s: access.allow-guest-user not enabled", id);
    return allowed;
}

/* -------------------------------------------------------------- lock dir */

/* The lock directory must be a real directory of root's that only root
 * can write.  With create, a missing one is made (0700) first.
 */
static int check_lock_dir (const struct call *c, bool create, struct err *e)
{
    const char *path = c->opt.lock_dir;
    bool created = false;
    struct stat st;

    if (lstat (path, &st) < 0) {
        if (errno != ENOENT) {
            set_err (e, errno, "cannot check lock directory %s: %s", path,
                     strerror (errno));
            return -1;
        }
        if (!create) {
            set_err (e, ENOENT, "lock directory %s does not exist", path);
            return -1;
        }
        if (mkdir (path, 0700) == 0)
            created = true;
        else if (errno != EEXIST) {
            set_err (e, errno, "cannot create lock directory %s: %s", path,
                     strerror (errno));
            return -1;
        }
        if (lstat (path, &st) < 0) {
            set_err (e, errno, "cannot check lock directory %s: %s", path,
                     strerror (errno));
            return -1;
        }
    }
    if (S_ISLNK (st.st_mode))
        set_err (e, ELOOP, "lock directory %s is a symlink", path);
    else if (!S_ISDIR (st.st_mode))
        set_err (e, ENOTDIR, "lock directory %s is not a directory", path);
    else if (st.st_uid != 0)
        set_err (e, EPERM, "lock directory %s is owned by uid %ju, not 0", path,
                 (uintmax_t)st.st_uid);
    else if (st.st_mode & (S_IWGRP | S_IWOTH))
        set_err (e, EPERM,
                 "lock directory %s is group- or other-writable (mode %04o)",
                 path, (unsigned)(st.st_mode & 07777));
    else
        return 0;
    if (created)
        (void)rmdir (path);
    return -1;
}

/* Take the per-user lock LOCKDIR/uid.UID.lock, waiting at most the
 * timeout.  Returns its descriptor (closing it releases the lock).
 */
static int user_lock (const struct call *c, uid_t uid, struct err *e)
{
    char path[PATH_MAX];
    double deadline = now () + c->opt.timeout;
    double backoff = 0.001;
    struct stat st;
    int fd;

    (void)snprintf (path, sizeof (path), "%s/uid.%ju.lock", c->opt.lock_dir,
                    (uintmax_t)uid);
    fd = open (path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        if (errno == ELOOP)
            set_err (e, ELOOP, "lock file %s is a symlink", path);
        else
            set_err (e, errno, "cannot open lock file %s: %s", path,
                     strerror (errno));
        return -1;
    }
    if (fstat (fd, &st) < 0) {
        set_err (e, errno, "cannot check lock file %s: %s", path,
                 strerror (errno));
        goto error;
    }
    if (!S_ISREG (st.st_mode)) {
        set_err (e, EPERM, "lock file %s is not a regular file", path);
        goto error;
    }
    if (st.st_uid != 0) {
        set_err (e, EPERM, "lock file %s is owned by uid %ju, not 0", path,
                 (uintmax_t)st.st_uid);
        goto error;
    }
    while (flock (fd, LOCK_EX | LOCK_NB) < 0) {
        if (errno == EINTR)
            continue;
        if (errno != EWOULDBLOCK) {
            set_err (e, errno, "cannot lock %s: %s", path, strerror (errno));
            goto error;
        }
        if (now () >= deadline) {
            set_err (e, ETIMEDOUT, "timed out after %gs waiting for lock %s",
                     c->opt.timeout, path);
            goto error;
        }
        pause_for (backoff);
        backoff = backoff < 0.05 ? backoff * 2 : backoff;
    }
    return fd;
error:
    (void)close (fd);
    return -1;
}

/* Read the marker LOCKDIR/uid.UID.active: 0 absent, 1 present; with a
 * first line "deny: TEXT", TEXT goes to deny (else deny is "").
 */
static int read_marker (const struct call *c, uid_t uid, char *deny,
                        size_t size, struct err *e)
{
    char path[PATH_MAX], buf[MARKER_READ + 1];
    const char *text;
    struct stat st;
    ssize_t n;
    int fd;

    deny[0] = '\0';
    (void)snprintf (path, sizeof (path), "%s/uid.%ju.active", c->opt.lock_dir,
                    (uintmax_t)uid);
    if (lstat (path, &st) < 0) {
        if (errno == ENOENT)
            return 0;
        set_err (e, errno, "cannot check marker %s: %s", path,
                 strerror (errno));
        return -1;
    }
    if (!S_ISREG (st.st_mode)) {
        set_err (e, EPERM, "marker %s is not a regular file", path);
        return -1;
    }
    if ((fd = open (path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)) < 0) {
        if (errno == ENOENT)
            return 0;
        set_err (e, errno, "cannot read marker %s: %s", path, strerror (errno));
        return -1;
    }
    do {
        n = read (fd, buf, MARKER_READ);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        set_err (e, errno, "cannot read marker %s: %s", path, strerror (errno));
        (void)close (fd);
        return -1;
    }
    (void)close (fd);
    buf[n] = '\0';
    buf[strcspn (buf, "\n")] = '\0';
    if (!strncmp (buf, "deny:", 5)) {
        text = buf + 5 + strspn (buf + 5, " \t");
        copy_message (deny, size, *text ? text : "Access denied");
    }
    return 1;
}

/* ------------------------------------------------------------- account */

/* Add job id to the verdict's list, if it fits: F58 with an ASCII "f",
 * whatever the locale, as the session's FLUX_JOB_ID(S) carry it. */
static void add_job (struct verdict *v, json_int_t id)
{
    size_t off = strlen (v->jobs);
    char text[32];
    int n;

    if (v->nlisted >= CHECK_MAX_JOBS)
        return;
    n = snprintf (v->jobs + off, sizeof (v->jobs) - off, "%s%s",
                  off ? "," : "", job_id (id, "f58plain", text, sizeof (text)));
    if (n < 0 || (size_t)n >= sizeof (v->jobs) - off) {
        v->jobs[off] = '\0';
        return;
    }
    v->nlisted++;
}

/* pam.check's answer.  -1 (EPROTO) if it breaks the protocol. */
static int parse_check (const struct call *c, json_t *obj, struct verdict *v,
                        struct err *e)
{
    json_t *admitted = json_object_get (obj, "admitted");
    json_t *jobs = json_object_get (obj, "jobs");
    json_t *njobs = json_object_get (obj, "njobs");
    json_t *message = json_object_get (obj, "message");
    json_t *manage = json_object_get (obj, "manage_user_slice");
    const char *reason = json_string_value (json_object_get (obj, "reason"));
    size_t i;
    json_t *id;

    if (!json_is_boolean (admitted)) {
        set_err (e, EPROTO,
                 "pam.check response: admitted is missing or not a boolean");
        return -1;
    }
    if (jobs && !json_is_array (jobs))
        goto bad_jobs;
    json_array_foreach (jobs, i, id) {
        if (!is_uint (id))
            goto bad_jobs;
    }
    if (njobs && !is_uint (njobs)) {
        set_err (e, EPROTO, "pam.check response: njobs is not a count");
        return -1;
    }
    if (message && !json_is_string (message)) {
        set_err (e, EPROTO, "pam.check response: message is not a string");
        return -1;
    }
    if (reason)
        flog (c, LOG_DEBUG, "pam.check: %s", reason);
    v->source = "pam.check";
    if (json_is_true (admitted)) {
        v->kind = VERDICT_OWNER;
        json_array_foreach (jobs, i, id)
            add_job (v, json_integer_value (id));
        v->njobs = njobs ? (int)json_integer_value (njobs)
                         : (int)json_array_size (jobs);
        v->manage = json_is_boolean (manage) ? json_is_true (manage) : -1;
    }
    else if (message) {
        v->kind = VERDICT_REFUSED;
        copy_message (v->message, sizeof (v->message),
                      json_string_value (message));
    }
    else
        v->kind = VERDICT_NONE;
    return 0;
bad_jobs:
    set_err (e, EPROTO, "pam.check response: jobs is not an array of job IDs");
    return -1;
}

/* The job-list.list request for RUN jobs of uids on rank. */
static json_t *joblist_request (const uid_t *uids, int nuids,
                                unsigned long rank, int max_entries)
{
    char rankstr[32];
    json_t *userids = json_array ();

    for (int i = 0; i < nuids && userids; i++)
        if (json_array_append_new (userids, json_integer (uids[i])) < 0) {
            json_decref (userids);
            return NULL;
        }
    if (!userids)
        return NULL;
    (void)snprintf (rankstr, sizeof (rankstr), "%lu", rank);
    return json_pack ("{s:i s:[ssss] s:{s:[{s:o} {s:[s]} {s:[s]}]}}",
                      "max_entries", max_entries,
                      "attrs", "userid", "ranks", "state", "annotations",
                      "constraint", "and",
                      "userid", userids,
                      "ranks", rankstr,
                      "states", "run");
}

/* The job-list path: the user's own RUN job here when the module is not
 * loaded (fallback), and with allow-guest-user the owner's jobs that
 * admit guests.  *v is NONE unless something admits.
 */
static int check_joblist (const struct call *c, flux_t *h, uid_t uid,
                          bool fallback, struct verdict *v, struct err *e)
{
    unsigned long rank, owner = ULONG_MAX;
    uid_t uids[2];
    int nuids = 0;
    flux_future_t *f;
    json_t *obj, *jobs, *o;
    size_t i;
    int rc = -1;

    if (attr_uint (c, h, "rank", &rank, e) < 0)
        return -1;
    if (fallback)
        uids[nuids++] = uid;
    if (c->opt.allow_guest_user) {
        struct err oe;
        char es[600];
        if (attr_uint (c, h, "security.owner", &owner, &oe) < 0) {
            flog (c, LOG_ERR, "cannot get security.owner for guests: %s",
                  err_str (&oe, es, sizeof (es)));
            owner = ULONG_MAX;
        }
        else if (owner == uid)
            owner = ULONG_MAX;
        else
            uids[nuids++] = (uid_t)owner;
    }
    if (nuids == 0)
        return 0;
    /* the user's own jobs: asking for one more than can be listed tells
     * whether the list is complete */
    if (rpc (c, h, "job-list.list",
             joblist_request (uids, nuids, rank,
                              owner != ULONG_MAX ? 0 : CHECK_MAX_JOBS + 1),
             &f, &obj, e) < 0)
        return -1;
    if (!json_is_array ((jobs = json_object_get (obj, "jobs")))) {
        set_err (e, EPROTO, "job-list.list response has no jobs array");
        goto done;
    }
    json_array_foreach (jobs, i, o) {
        struct job job;
        int r = parse_job (o, rank, &job, e);
        if (r < 0 && v->kind == VERDICT_OWNER) {
            v->njobs = -1;       /* admitted; the list is not complete */
            break;
        }
        if (r < 0)
            goto done;
        if (r == 0 || !fallback || job.userid != (json_int_t)uid
            || !job.on_rank)
            continue;
        v->kind = VERDICT_OWNER;
        v->source = "job-list";
        v->manage = -1;
        add_job (v, job.id);
        v->njobs++;
    }
    if (v->kind == VERDICT_OWNER) {
        rc = 0;
        goto done;
    }
    json_array_foreach (jobs, i, o) {
        struct job job;
        if (parse_job (o, rank, &job, e) <= 0 || owner == ULONG_MAX
            || job.userid != (json_int_t)owner || !job.on_rank)
            continue;
        if (!job.first) {
            char id[32];
            flog (c, LOG_DEBUG, "job %s: this rank is not its first",
                  f58 (job.id, id, sizeof (id)));
            continue;
        }
        if (guest_allowed (c, &job)) {
            v->kind = VERDICT_GUEST;
            v->source = "job-list";
            (void)f58 (job.id, v->jobs, sizeof (v->jobs));
            break;
        }
    }
    rc = 0;
done:
    flux_future_destroy (f);
    return rc;
}

/* Ask the broker about uid.  -1: it cannot be asked or answers nonsense. */
static int check_account (const struct call *c, uid_t uid, struct verdict *v,
                          struct err *e)
{
    flux_future_t *f;
    json_t *obj;
    flux_t *h;
    int rc = -1;

    memset (v, 0, sizeof (*v));
    v->kind = VERDICT_NONE;
    v->source = "pam.check";
    v->manage = -1;
    if (!(h = broker_open (c, broker_uri (), e)))
        return -1;
    if (rpc (c, h, "pam.check",
             json_pack ("{s:I s:i}", "uid", (json_int_t)uid, "max_jobs",
                        CHECK_MAX_JOBS),
             &f, &obj, e) == 0) {
        rc = parse_check (c, obj, v, e);
        flux_future_destroy (f);
        if (rc == 0 && v->kind == VERDICT_NONE && c->opt.allow_guest_user)
            rc = check_joblist (c, h, uid, false, v, e);
    }
    else if (e->errnum == ENOSYS) {
        flog (c, LOG_DEBUG, "pam module not loaded: asking job-list");
        v->source = "job-list";
        rc = check_joblist (c, h, uid, true, v, e);
    }
    flux_close (h);
    if (rc == 0 && v->kind == VERDICT_OWNER
        && !strcmp (v->source, "job-list")) {
        /* fallback: the prolog may have left "deny: TEXT" in the marker */
        char deny[MAX_MESSAGE + 1];
        struct err le;
        if (check_lock_dir (c, false, &le) < 0) {
            if (le.errnum != ENOENT) {
                *e = le;
                return -1;
            }
        }
        else if (read_marker (c, uid, deny, sizeof (deny), e) < 0)
            return -1;
        else if (deny[0]) {
            v->kind = VERDICT_REFUSED;
            copy_message (v->message, sizeof (v->message), deny);
        }
    }
    return rc;
}

static void admitted_cleanup (pam_handle_t *pamh, void *data, int status)
{
    struct admitted *a = data;

    (void)pamh;
    (void)status;
    if (a) {
        free (a->user);
        free (a->jobs);
        free (a);
    }
}

/* Leave the session step of this handle the admitted job owner. */
static int remember (const struct call *c, const char *user, uid_t uid,
                     const struct verdict *v)
{
    struct admitted *a = calloc (1, sizeof (*a));

    if (!a || !(a->user = strdup (user)) || !(a->jobs = strdup (v->jobs))) {
        if (a)
            free (a->user);
        free (a);
        flog (c, LOG_CRIT, "out of memory");
        return -1;
    }
    a->uid = uid;
    a->manage = v->manage;
    a->nlisted = v->nlisted;
    a->njobs = v->njobs;
    if (pam_set_data (c->pamh, DATA_ADMITTED, a, admitted_cleanup)
        != PAM_SUCCESS) {
        admitted_cleanup (c->pamh, a, 0);
        flog (c, LOG_CRIT, "cannot keep the account verdict for the session");
        return -1;
    }
    return 0;
}

static int account (struct call *c)
{
    const char *service = get_service (c);
    const char *user = NULL;
    char who[300], msg[MAX_MESSAGE + 64], es[600];
    struct verdict v;
    struct err e;
    uid_t uid = 0;
    int rc;

    (void)pam_set_data (c->pamh, DATA_ADMITTED, NULL, NULL);
    if (!service_matches (c, service)) {
        flog (c, LOG_DEBUG, "service %s is not %s", service ? service : "?",
              c->opt.service);
        return PAM_IGNORE;
    }
    if ((rc = get_user (c, &user, &uid)) != PAM_SUCCESS)
        return rc;
    (void)snprintf (who, sizeof (who), "user %s (uid=%ju)", user,
                    (uintmax_t)uid);
    if (uid == 0) {
        flog (c, LOG_DEBUG, "access granted for %s: root", who);
        return PAM_SUCCESS;
    }
    if (check_account (c, uid, &v, &e) < 0) {
        flog (c, LOG_ERR, "cannot check jobs of %s: %s", who,
              err_str (&e, es, sizeof (es)));
        switch (c->opt.generic_failure) {
            case ACTION_ALLOW:
                flog (c, LOG_WARNING,
                      "access granted for %s without a job check", who);
                return PAM_SUCCESS;
            case ACTION_IGNORE:
                return PAM_IGNORE;
            case ACTION_DENY:
                break;
        }
        flog (c, LOG_INFO, "access denied for %s", who);
        (void)snprintf (msg, sizeof (msg),
                        "Access denied: the jobs of user %s on this node cannot"
                        " be checked right now; try again later", user);
        tell (c, msg);
        return PAM_PERM_DENIED;
    }
    switch (v.kind) {
        case VERDICT_OWNER:
            flog (c, LOG_DEBUG, "access granted for %s: jobs %s (%s)", who,
                  v.jobs, v.source);
            if (remember (c, user, uid, &v) < 0)
                return PAM_BUF_ERR;
            return PAM_SUCCESS;
        case VERDICT_GUEST:
            flog (c, LOG_INFO, "access granted for %s as guest of job %s", who,
                  v.jobs);
            return PAM_SUCCESS;
        case VERDICT_REFUSED:
            flog (c, LOG_INFO, "access denied for %s: %s", who, v.message);
            tell (c, v.message);
            return PAM_PERM_DENIED;
        case VERDICT_NONE:
            break;
    }
    if (c->opt.no_jobs == ACTION_IGNORE) {
        flog (c, LOG_INFO, "%s has no active jobs on this node", who);
        return PAM_IGNORE;
    }
    flog (c, LOG_INFO, "access denied for %s: no active jobs on this node",
          who);
    (void)snprintf (msg, sizeof (msg),
                    "Access denied: user %s has no active jobs on this node",
                    user);
    tell (c, msg);
    return PAM_PERM_DENIED;
}

/* -------------------------------------------------------------- systemd */

/* sd-bus is loaded when a session needs it, not linked: the account step of
 * every login then does not load libsystemd and the libraries it needs
 * (about 0.7 ms of each login on a 2-core node; bench/admission.py).
 */
#define LIBSYSTEMD "libsystemd.so.0"
#define SD_FUNCTIONS(X)                                                      \
    X (sd_bus_open_system) X (sd_bus_new) X (sd_bus_set_address)             \
    X (sd_bus_start) X (sd_bus_is_ready) X (sd_bus_process)                  \
    X (sd_bus_wait) X (sd_bus_match_signal_async) X (sd_bus_slot_unref)      \
    X (sd_bus_close) X (sd_bus_unref) X (sd_bus_call)                        \
    X (sd_bus_message_new_method_call) X (sd_bus_message_append)            \
    X (sd_bus_message_read) X (sd_bus_message_unref)                         \
    X (sd_bus_error_free) X (sd_bus_error_is_set)

struct sd {
    void *dso;
#define SD_DECLARE(name) __typeof__ (name) *name;
    SD_FUNCTIONS (SD_DECLARE)
#undef SD_DECLARE
};

static int sd_load (struct sd *sd, struct err *e)
{
    memset (sd, 0, sizeof (*sd));
    if (!(sd->dso = dlopen (LIBSYSTEMD, RTLD_NOW | RTLD_LOCAL))) {
        set_err (e, ENOENT, "cannot load %s: %s", LIBSYSTEMD, dlerror ());
        return -1;
    }
#define SD_RESOLVE(name)                                                     \
    if (!(*(void **)&sd->name = dlsym (sd->dso, #name))) {                   \
        set_err (e, ENOSYS, "%s has no %s", LIBSYSTEMD, #name);              \
        goto error;                                                          \
    }
    SD_FUNCTIONS (SD_RESOLVE)
#undef SD_RESOLVE
    return 0;
error:
    (void)dlclose (sd->dso);
    sd->dso = NULL;
    return -1;
}

#define JOBS_SEEN 8

/* systemd's own socket, which it serves to root (as systemctl uses it):
 * no bus daemon in between, no Hello, no AddMatch.
 */
#define SYSTEMD_PRIVATE "/run/systemd/private"

/* A connection to systemd and the JobRemoved signals it has delivered. */
struct bus {
    struct sd sd;
    bool direct;                 /* to SYSTEMD_PRIVATE, not the system bus */
    sd_bus *bus;
    sd_bus_slot *slot;
    struct {
        char path[128];
        char result[32];
    } seen[JOBS_SEEN];
    int nseen;
};

static void set_bus_err (const struct bus *b, struct err *e, int r,
                         const sd_bus_error *error, const char *what)
{
    if (error && b->sd.sd_bus_error_is_set (error))
        set_err (e, -r, "%s: %s: %s", what, error->name,
                 error->message ? error->message : "");
    else
        set_err (e, -r, "%s: %s", what, strerror (-r));
}

static int job_removed (sd_bus_message *m, void *arg, sd_bus_error *error)
{
    struct bus *b = arg;
    const char *path, *unit, *result;
    uint32_t id;
    int i;

    (void)error;
    if (b->sd.sd_bus_message_read (m, "uoss", &id, &path, &unit, &result) < 0)
        return 0;
    i = b->nseen++ % JOBS_SEEN;
    (void)snprintf (b->seen[i].path, sizeof (b->seen[i].path), "%s", path);
    (void)snprintf (b->seen[i].result, sizeof (b->seen[i].result), "%s",
                    result);
    return 0;
}

static void bus_close (struct bus *b)
{
    /* no flush: every call has had its reply, and a flush can block */
    if (b->sd.dso) {
        b->sd.sd_bus_slot_unref (b->slot);
        b->sd.sd_bus_close (b->bus);
        b->sd.sd_bus_unref (b->bus);
        (void)dlclose (b->sd.dso);
    }
    b->slot = NULL;
    b->bus = NULL;
    b->sd.dso = NULL;
}

/* Connect to systemd's own socket, when root and no system bus address is
 * set (as systemctl does); -1 to use the system bus instead.
 */
static int direct_connect (struct bus *b)
{
    struct stat st;

    if (geteuid () != 0 || getenv ("DBUS_SYSTEM_BUS_ADDRESS")
        || lstat (SYSTEMD_PRIVATE, &st) < 0 || !S_ISSOCK (st.st_mode))
        return -1;
    if (b->sd.sd_bus_new (&b->bus) < 0)
        return -1;
    if (b->sd.sd_bus_set_address (b->bus, "unix:path=" SYSTEMD_PRIVATE) < 0
        || b->sd.sd_bus_start (b->bus) < 0) {
        b->bus = b->sd.sd_bus_unref (b->bus);
        return -1;
    }
    b->direct = true;
    return 0;
}

/* Connect to systemd within the timeout, and watch JobRemoved: over its own
 * socket (direct_connect), else over the system bus (DBUS_SYSTEM_BUS_ADDRESS,
 * else the default).
 */
static int bus_open (const struct call *c, struct bus *b, struct err *e)
{
    double deadline = now () + c->opt.timeout;
    int r;

    memset (b, 0, sizeof (*b));
    if (sd_load (&b->sd, e) < 0)
        return -1;
    if (direct_connect (b) < 0
        && (r = b->sd.sd_bus_open_system (&b->bus)) < 0) {
        set_err (e, -r, "cannot connect to the system bus: %s", strerror (-r));
        goto error;
    }
    while ((r = b->sd.sd_bus_is_ready (b->bus)) == 0) {
        double left = deadline - now ();
        if (left <= 0) {
            set_err (e, ETIMEDOUT, "system bus: not ready within %gs",
                     c->opt.timeout);
            goto error;
        }
        if ((r = b->sd.sd_bus_process (b->bus, NULL)) < 0)
            break;
        if (r == 0 && (r = b->sd.sd_bus_wait (b->bus,
                                              (uint64_t)whole (left, 1e6))) < 0)
            break;
    }
    if (r < 0) {
        set_err (e, -r, "cannot connect to the system bus: %s", strerror (-r));
        goto error;
    }
    /* messages on the direct connection carry no sender */
    r = b->sd.sd_bus_match_signal_async (b->bus, &b->slot,
                                         b->direct ? NULL : SYSTEMD_DEST,
                                         SYSTEMD_PATH, SYSTEMD_MANAGER,
                                         "JobRemoved", job_removed, NULL, b);
    if (r < 0) {
        set_err (e, -r, "cannot watch systemd jobs: %s", strerror (-r));
        goto error;
    }
    flog (c, LOG_DEBUG, "connected to systemd over %s",
          b->direct ? SYSTEMD_PRIVATE : "the system bus");
    return 0;
error:
    bus_close (b);
    return -1;
}

/* Wait for systemd's job to finish; -1 unless its result is "done". */
static int bus_wait_job (const struct call *c, struct bus *b, const char *job,
                         const char *what, struct err *e)
{
    double deadline = now () + c->opt.timeout;
    int r;

    for (;;) {
        for (int i = 0; i < JOBS_SEEN && i < b->nseen; i++) {
            if (strcmp (b->seen[i].path, job) != 0)
                continue;
            if (strcmp (b->seen[i].result, "done") != 0) {
                set_err (e, EIO, "%s job %s: %s", what, job, b->seen[i].result);
                return -1;
            }
            return 0;
        }
        if ((r = b->sd.sd_bus_process (b->bus, NULL)) < 0) {
            set_err (e, -r, "%s job %s: D-Bus connection lost: %s", what, job,
                     strerror (-r));
            return -1;
        }
        if (r > 0)
            continue;
        double left = deadline - now ();
        if (left <= 0) {
            set_err (e, ETIMEDOUT, "%s job %s: not done within %gs", what, job,
                     c->opt.timeout);
            return -1;
        }
        if ((r = b->sd.sd_bus_wait (b->bus, (uint64_t)whole (left, 1e6))) < 0) {
            set_err (e, -r, "%s job %s: %s", what, job, strerror (-r));
            return -1;
        }
    }
}

/* Call a method of systemd's manager that returns a job; wait for it.
 * *queued tells whether systemd took the job (the unit may then exist).
 */
static int bus_job_call (const struct call *c, struct bus *b,
                         sd_bus_message *m, const char *what, bool *queued,
                         struct err *e)
{
    sd_bus_error error = SD_BUS_ERROR_NULL;
    sd_bus_message *reply = NULL;
    const char *job;
    int r, rc = -1;

    r = b->sd.sd_bus_call (b->bus, m, (uint64_t)whole (c->opt.timeout, 1e6),
                           &error, &reply);
    if (r < 0) {
        set_bus_err (b, e, r, &error, what);
        goto done;
    }
    *queued = true;
    if ((r = b->sd.sd_bus_message_read (reply, "o", &job)) < 0) {
        set_bus_err (b, e, r, NULL, what);
        goto done;
    }
    rc = bus_wait_job (c, b, job, what, e);
done:
    b->sd.sd_bus_message_unref (reply);
    b->sd.sd_bus_error_free (&error);
    return rc;
}

/* Start scope in slice holding this process. */
static int bus_start_scope (const struct call *c, struct bus *b,
                            const char *scope, const char *slice,
                            const char *description, bool *queued,
                            struct err *e)
{
    sd_bus_message *m = NULL;
    int r, rc = -1;

    r = b->sd.sd_bus_message_new_method_call (b->bus, &m, SYSTEMD_DEST,
                                              SYSTEMD_PATH, SYSTEMD_MANAGER,
                                              "StartTransientUnit");
    if (r >= 0)
        r = b->sd.sd_bus_message_append (m, "ss", scope, "fail");
    if (r >= 0)
        r = b->sd.sd_bus_message_append (m, "a(sv)", 3,
                                   "Slice", "s", slice,
                                   "PIDs", "au", 1, (uint32_t)getpid (),
                                   "Description", "s", description);
    if (r >= 0)
        r = b->sd.sd_bus_message_append (m, "a(sa(sv))", 0);
    if (r < 0)
        set_bus_err (b, e, r, NULL, "StartTransientUnit");
    else
        rc = bus_job_call (c, b, m, "StartTransientUnit", queued, e);
    b->sd.sd_bus_message_unref (m);
    return rc;
}

static int bus_stop_unit (const struct call *c, struct bus *b,
                          const char *unit, struct err *e)
{
    sd_bus_message *m = NULL;
    bool queued = false;
    int r, rc = -1;

    r = b->sd.sd_bus_message_new_method_call (b->bus, &m, SYSTEMD_DEST,
                                              SYSTEMD_PATH, SYSTEMD_MANAGER,
                                              "StopUnit");
    if (r >= 0)
        r = b->sd.sd_bus_message_append (m, "ss", unit, "replace");
    if (r < 0)
        set_bus_err (b, e, r, NULL, "StopUnit");
    else
        rc = bus_job_call (c, b, m, "StopUnit", &queued, e);
    b->sd.sd_bus_message_unref (m);
    return rc;
}

/* This process's cgroup (v2), "" if unknown. */
static void own_cgroup (char *buf, size_t size)
{
    char line[PATH_MAX + 8];
    FILE *f = fopen ("/proc/self/cgroup", "re");

    buf[0] = '\0';
    if (!f)
        return;
    while (fgets (line, sizeof (line), f)) {
        size_t n = strcspn (line, "\n");
        if (!strncmp (line, "0::", 3) && n - 3 < size) {
            memcpy (buf, line + 3, n - 3);
            buf[n - 3] = '\0';
            break;
        }
    }
    (void)fclose (f);
}

/* Move this process back to cgroup, so that stopping the scope spares it. */
static void leave_scope (const struct call *c, const char *cgroup)
{
    char path[PATH_MAX], pid[32];
    int fd, n;

    if (!cgroup[0]) {
        flog (c, LOG_ERR, "cgroup unknown: stopping the scope kills us");
        return;
    }
    (void)snprintf (path, sizeof (path), "/sys/fs/cgroup/%s/cgroup.procs",
                    cgroup + strspn (cgroup, "/"));
    n = snprintf (pid, sizeof (pid), "%ld", (long)getpid ());
    if ((fd = open (path, O_WRONLY | O_CLOEXEC)) < 0
        || write (fd, pid, (size_t)n) != n)
        flog (c, LOG_ERR, "cannot move back to %s: %s", cgroup,
              strerror (errno));
    if (fd >= 0)
        (void)close (fd);
}

/* -------------------------------------------------------------- session */

enum confirm { CONFIRMED, REFUSED, REFUSED_MESSAGE, CONFIRM_FAILED };

/* Confirm the scope: pam.attach, or the marker without the module.
 * how names the way; on REFUSED_MESSAGE text is what the user is told;
 * on REFUSED e says why (e->errnum 0: no marker).
 */
static enum confirm confirm_scope (const struct call *c, uid_t uid,
                                   const char *scope, const char **how,
                                   char *text, size_t size, struct err *e)
{
    flux_future_t *f;
    json_t *obj, *message;
    flux_t *h;
    int fd, r;

    *how = "pam.attach";
    if (!(h = broker_open (c, broker_uri (), e)))
        return CONFIRM_FAILED;
    r = rpc (c, h, "pam.attach",
             json_pack ("{s:I s:s}", "uid", (json_int_t)uid, "scope", scope),
             &f, &obj, e);
    flux_close (h);
    if (r == 0) {
        enum confirm result = CONFIRM_FAILED;
        message = json_object_get (obj, "message");
        if (json_is_true (json_object_get (obj, "attached")))
            result = CONFIRMED;
        else if (json_is_false (json_object_get (obj, "attached"))
                 && json_is_string (message)) {
            copy_message (text, size, json_string_value (message));
            result = REFUSED_MESSAGE;
        }
        else
            set_err (e, EPROTO,
                     "pam.attach response is not {\"attached\": true}"
                     " or {\"attached\": false, \"message\": TEXT}");
        flux_future_destroy (f);
        return result;
    }
    if (e->errnum == EPERM || e->errnum == ESRCH)
        return REFUSED;
    if (e->errnum != ENOSYS)
        return CONFIRM_FAILED;
    *how = "marker";
    if ((fd = user_lock (c, uid, e)) < 0)
        return CONFIRM_FAILED;
    r = read_marker (c, uid, text, size, e);
    (void)close (fd);
    if (r < 0)
        return CONFIRM_FAILED;
    if (r == 0) {
        e->errnum = 0;
        return REFUSED;
    }
    return text[0] ? REFUSED_MESSAGE : CONFIRMED;
}

/* pam.manage-user-slice of the configuration in force (config.get). */
static int get_manage (const struct call *c, int *manage, struct err *e)
{
    flux_future_t *f;
    json_t *obj, *pam, *value;
    flux_t *h;
    int rc = -1;

    if (!(h = broker_open (c, broker_uri (), e)))
        return -1;
    if (rpc (c, h, "config.get", json_object (), &f, &obj, e) < 0) {
        flux_close (h);
        return -1;
    }
    flux_close (h);
    pam = json_object_get (obj, "pam");
    value = json_object_get (pam, "manage-user-slice");
    if (pam && !json_is_object (pam))
        set_err (e, EPROTO, "config.get: pam is not a table");
    else if (value && !json_is_boolean (value))
        set_err (e, EPROTO,
                 "config.get: pam.manage-user-slice is not a boolean");
    else {
        *manage = json_is_true (value);
        rc = 0;
    }
    flux_future_destroy (f);
    return rc;
}

static int setup_failed (const struct call *c, const char *user)
{
    char msg[MAX_MESSAGE + 64];

    (void)snprintf (msg, sizeof (msg),
                    "Access denied: cannot set up a session for user %s on"
                    " this node", user);
    tell (c, msg);
    return PAM_SESSION_ERR;
}

/* Leave the scope this process was put in, and stop it. */
static void undo_scope (const struct call *c, struct bus *b, const char *scope,
                        const char *cgroup)
{
    char es[600];
    struct err e;

    leave_scope (c, cgroup);
    /* systemd collects the scope once it is empty: it may be gone already */
    if (bus_stop_unit (c, b, scope, &e) < 0)
        flog (c, e.errnum == ENOENT ? LOG_DEBUG : LOG_ERR, "cannot stop %s: %s",
              scope, err_str (&e, es, sizeof (es)));
}

/* Start the scope, confirm it, and undo it on a refusal. */
static int open_scope (const struct call *c, const char *user, uid_t uid,
                       const char *who)
{
    char scope[SCOPE_PREFIX_MAX + 64], slice[64], desc[300], cgroup[PATH_MAX];
    char text[MAX_MESSAGE + 64], es[600], xdg[64], dbus[96];
    enum confirm result;
    const char *how = "";
    bool queued = false;
    struct bus b;
    struct err e;

    (void)snprintf (scope, sizeof (scope), "%s-%ld.scope", c->opt.scope_prefix,
                    (long)getpid ());
    (void)snprintf (slice, sizeof (slice), "user-%ju.slice", (uintmax_t)uid);
    (void)snprintf (desc, sizeof (desc), "pam_flux login of %s", user);
    own_cgroup (cgroup, sizeof (cgroup));
    if (bus_open (c, &b, &e) < 0
        || bus_start_scope (c, &b, scope, slice, desc, &queued, &e) < 0) {
        flog (c, LOG_ERR, "session refused for %s: cannot create %s: %s", who,
              scope, err_str (&e, es, sizeof (es)));
        if (queued)
            undo_scope (c, &b, scope, cgroup);
        bus_close (&b);
        return setup_failed (c, user);
    }
    result = confirm_scope (c, uid, scope, &how, text, sizeof (text), &e);
    if (result != CONFIRMED)
        undo_scope (c, &b, scope, cgroup);
    bus_close (&b);
    switch (result) {
        case CONFIRMED:
            break;
        case REFUSED:
            flog (c, LOG_INFO,
                  "session refused for %s: no longer active (%s: %s)", who,
                  how, e.errnum ? err_str (&e, es, sizeof (es)) : "no marker");
            (void)snprintf (text, sizeof (text),
                            "Access denied: user %s has no active jobs on this"
                            " node", user);
            tell (c, text);
            return PAM_SESSION_ERR;
        case REFUSED_MESSAGE:
            flog (c, LOG_INFO, "session refused for %s (%s): %s", who, how,
                  text);
            tell (c, text);
            return PAM_SESSION_ERR;
        case CONFIRM_FAILED:
            flog (c, LOG_ERR, "session refused for %s: cannot confirm %s: %s",
                  who, scope, err_str (&e, es, sizeof (es)));
            return setup_failed (c, user);
    }
    flog (c, LOG_DEBUG, "attached %s to %s (%s)", who, scope, how);
    (void)snprintf (xdg, sizeof (xdg), "XDG_RUNTIME_DIR=/run/user/%ju",
                    (uintmax_t)uid);
    (void)snprintf (dbus, sizeof (dbus),
                    "DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/%ju/bus",
                    (uintmax_t)uid);
    if (pam_putenv (c->pamh, xdg) != PAM_SUCCESS
        || pam_putenv (c->pamh, dbus) != PAM_SUCCESS)
        flog (c, LOG_ERR, "cannot set XDG_RUNTIME_DIR and"
              " DBUS_SESSION_BUS_ADDRESS for %s", who);
    return PAM_SUCCESS;
}

/* The session's view of its jobs (pam_flux(8), ENVIRONMENT): FLUX_URI,
 * and FLUX_JOB_ID for one job or FLUX_JOB_IDS for several, set only when
 * the list is complete; a value the PAM environment had is dropped. */
static void set_job_env (const struct call *c, const struct admitted *a,
                         const char *who)
{
    char uri[PATH_MAX + 16], ids[JOBS_TEXT + 16];
    const char *name = NULL;
    bool ok;

    (void)snprintf (uri, sizeof (uri), "FLUX_URI=%s", broker_uri ());
    ok = pam_putenv (c->pamh, uri) == PAM_SUCCESS;
    (void)pam_putenv (c->pamh, "FLUX_JOB_ID");
    (void)pam_putenv (c->pamh, "FLUX_JOB_IDS");
    if (a->nlisted > 0 && a->nlisted == a->njobs)
        name = a->njobs == 1 ? "FLUX_JOB_ID" : "FLUX_JOB_IDS";
    else
        flog (c, LOG_DEBUG, "the jobs of %s here are not all listed (%d of"
              " %d): no FLUX_JOB_ID(S)", who, a->nlisted, a->njobs);
    if (name) {
        (void)snprintf (ids, sizeof (ids), "%s=%s", name, a->jobs);
        ok = ok && pam_putenv (c->pamh, ids) == PAM_SUCCESS;
    }
    if (!ok)
        flog (c, LOG_ERR, "cannot set FLUX_URI and the job IDs for %s", who);
}

static int session (struct call *c)
{
    const char *service = get_service (c);
    const void *data = NULL;
    const struct admitted *a;
    const char *user = NULL;
    char who[300], es[600];
    struct err e;
    uid_t uid = 0;
    int manage, rc;

    if (service && !strcmp (service, SYSTEMD_USER_SERVICE)) {
        flog (c, LOG_DEBUG, "systemd-user service: not acting");
        return PAM_IGNORE;
    }
    if (!service_matches (c, service)) {
        flog (c, LOG_DEBUG, "service %s is not %s", service ? service : "?",
              c->opt.service);
        return PAM_IGNORE;
    }
    if (pam_get_data (c->pamh, DATA_ADMITTED, &data) != PAM_SUCCESS || !data) {
        flog (c, LOG_DEBUG,
              "no session setup: not admitted by pam_flux as job owner");
        return PAM_IGNORE;
    }
    a = data;
    if (get_user (c, &user, &uid) != PAM_SUCCESS || strcmp (user, a->user) != 0
        || uid != a->uid) {
        flog (c, LOG_ERR, "user %s is not the user %s admitted",
              user ? user : "?", a->user);
        return setup_failed (c, user ? user : "?");
    }
    (void)snprintf (who, sizeof (who), "user %s (uid=%ju)", user,
                    (uintmax_t)uid);
    manage = a->manage;
    if (manage < 0 && get_manage (c, &manage, &e) < 0) {
        flog (c, LOG_ERR, "session refused for %s: cannot read the"
              " configuration: %s", who, err_str (&e, es, sizeof (es)));
        return setup_failed (c, user);
    }
    if (!manage) {
        flog (c, LOG_DEBUG, "pam.manage-user-slice is false: no scope");
        set_job_env (c, a, who);
        return PAM_SUCCESS;
    }
    /* Checked with the module too: a lock directory others can write means
     * the node is not in the state this module relies on.
     */
    if (check_lock_dir (c, true, &e) < 0) {
        flog (c, LOG_ERR, "session refused for %s: unsafe lock directory: %s",
              who, err_str (&e, es, sizeof (es)));
        return setup_failed (c, user);
    }
    rc = open_scope (c, user, uid, who);
    if (rc == PAM_SUCCESS)
        set_job_env (c, a, who);
    return rc;
}

/* ---------------------------------------------------------- entry points */

PAM_EXTERN int pam_sm_acct_mgmt (pam_handle_t *pamh, int flags, int argc,
                                 const char **argv)
{
    struct call c;

    if (call_init (&c, pamh, flags, argc, argv) < 0)
        return PAM_SERVICE_ERR;
    return account (&c);
}

PAM_EXTERN int pam_sm_open_session (pam_handle_t *pamh, int flags, int argc,
                                    const char **argv)
{
    struct call c;

    if (call_init (&c, pamh, flags, argc, argv) < 0)
        return PAM_SESSION_ERR;
    return session (&c);
}

/* systemd removes the scope when its last process exits. */
PAM_EXTERN int pam_sm_close_session (pam_handle_t *pamh, int flags, int argc,
                                     const char **argv)
{
    (void)pamh;
    (void)flags;
    (void)argc;
    (void)argv;
    return PAM_SUCCESS;
}

/* Not an auth or password module: PAM_IGNORE, PAM_SERVICE_ERR on bad
 * options (a typing mistake shows in every stack the line is in).
 */
static int not_acting (pam_handle_t *pamh, int flags, int argc,
                       const char **argv)
{
    struct call c;

    return call_init (&c, pamh, flags, argc, argv) < 0 ? PAM_SERVICE_ERR
                                                         : PAM_IGNORE;
}

PAM_EXTERN int pam_sm_authenticate (pam_handle_t *pamh, int flags, int argc,
                                    const char **argv)
{
    return not_acting (pamh, flags, argc, argv);
}

PAM_EXTERN int pam_sm_setcred (pam_handle_t *pamh, int flags, int argc,
                               const char **argv)
{
    return not_acting (pamh, flags, argc, argv);
}

PAM_EXTERN int pam_sm_chauthtok (pam_handle_t *pamh, int flags, int argc,
                                 const char **argv)
{
    return not_acting (pamh, flags, argc, argv);
}

/*
 * vi:tabstop=4 shiftwidth=4 expandtab
 */
