/* The sandbox ("pause") process of every weir pod: it holds the pod's
 * namespaces, reaps orphaned children (it is PID 1 of the pod) and exits
 * cleanly on SIGTERM/SIGINT. Built with `gcc -static` by `cargo xtask up`. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, NULL, WNOHANG) > 0) {} }

int main(void) {
    struct sigaction s = {0}, r = {0};
    s.sa_handler = stop;
    r.sa_handler = reap;
    r.sa_flags = SA_NOCLDSTOP | SA_RESTART;
    sigaction(SIGTERM, &s, NULL);
    sigaction(SIGINT, &s, NULL);
    sigaction(SIGCHLD, &r, NULL);
    for (;;) pause();
}
