// SPDX-License-Identifier: GPL-2.0
/*
 * upm-exec: run a command in a UPM merge domain.
 *
 *   upm-exec --domain ID [--] COMMAND [ARG...]
 *
 * Joins merge domain ID with prctl(PR_SET_UPM_DOMAIN) (ID 0: the default
 * domain of the process's user namespace and euid), then executes COMMAND
 * in place: no process stays behind, so it can prefix a systemd
 * ExecStart= line, a container runtime or a container's entrypoint. The
 * domain belongs to the address space and is kept across fork, a plain
 * exec and setuid(), so every process COMMAND starts, and a program that
 * drops privileges later (setpriv, runuser), is in the domain too; a
 * set-user-ID or file-capability exec starts in its default domain.
 * Joining a domain needs CAP_SYS_ADMIN. Documentation/admin-guide/mm/
 * upm.rst, "Merge domains for containers and services", has the recipes.
 *
 * Exit status (when COMMAND was not executed): 1 the kernel refused the
 * domain (EPERM without CAP_SYS_ADMIN), 2 usage error, 3 the kernel has
 * no UPM or no merge domains, 126 COMMAND cannot be executed, 127
 * COMMAND not found. Otherwise the status is COMMAND's.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "upm.h"

#define EXIT_KERNEL	1
#define EXIT_USAGE	2
#define EXIT_NO_UPM	3
#define EXIT_CANNOT_RUN	126
#define EXIT_NOT_FOUND	127

static const char usage[] =
	"usage: upm-exec --domain ID [--] COMMAND [ARG...]\n"
	"Run COMMAND in UPM merge domain ID (1..2147483647; 0 is the\n"
	"default domain). Joining a domain needs CAP_SYS_ADMIN.\n"
	"Exit status: COMMAND's, or 1 domain refused, 2 usage error,\n"
	"3 no UPM or no merge domains, 126 cannot execute, 127 not found.\n";

static int bad_usage(const char *what, const char *arg)
{
	fprintf(stderr, "upm-exec: error: %s%s%s\n%s", what,
		arg ? ": " : "", arg ? arg : "", usage);
	return EXIT_USAGE;
}

/* A domain id: decimal digits only, 0..INT_MAX */
static int parse_domain(const char *s, unsigned long *id)
{
	char *end;

	if (!*s || strspn(s, "0123456789") != strlen(s))
		return -EINVAL;
	errno = 0;
	*id = strtoul(s, &end, 10);
	if (errno || *id > INT_MAX)
		return -ERANGE;
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "domain", required_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	unsigned long id = 0;
	int c, have_id = 0, err;

	/* "+": options end at COMMAND, whose own options are its own */
	while ((c = getopt_long(argc, argv, "+d:h", opts, NULL)) != -1) {
		switch (c) {
		case 'd':
			if (parse_domain(optarg, &id))
				return bad_usage("not a domain id", optarg);
			have_id = 1;
			break;
		case 'h':
			fputs(usage, stdout);
			return 0;
		default:
			fputs(usage, stderr);
			return EXIT_USAGE;
		}
	}
	if (!have_id)
		return bad_usage("--domain ID is required", NULL);
	if (optind >= argc)
		return bad_usage("no command given", NULL);

	err = upm_set_domain(id);
	/* id is in range: EINVAL is a kernel with UPM but no domains */
	if (err == -EINVAL) {
		fputs("upm-exec: this kernel has no UPM merge domains\n",
		      stderr);
		return EXIT_NO_UPM;
	}
	if (err) {
		fprintf(stderr, "upm-exec: cannot join merge domain %lu: %s\n",
			id, upm_strerror(err));
		return err == -ENOSYS ? EXIT_NO_UPM : EXIT_KERNEL;
	}
	execvp(argv[optind], argv + optind);
	err = errno;
	fprintf(stderr, "upm-exec: cannot execute %s: %s\n", argv[optind],
		strerror(err));
	return err == ENOENT ? EXIT_NOT_FOUND : EXIT_CANNOT_RUN;
}
