/* A guest's client of /dev/lxd/sock, built static by the tests and pushed into a container.
 *
 *   devlxd-client PATH            GET PATH (HTTP/1.0); prints the status code, a newline, the body
 *   devlxd-client -w PATH COUNT   websocket to PATH; prints "open", then COUNT text messages, one a line
 *   devlxd-client -u UID ...      the same, as user and group UID
 *
 * DEVLXD_SOCKET names another socket than /dev/lxd/sock. Exits 2 on a socket error, 3 on a bad answer; gives up after 30 seconds.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define SOCKET_PATH "/dev/lxd/sock"

static int connect_socket(void)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	const char *path = getenv("DEVLXD_SOCKET");
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	strncpy(addr.sun_path, path ? path : SOCKET_PATH, sizeof(addr.sun_path) - 1);
	if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		perror("connect");
		exit(2);
	}
	return fd;
}

static void send_all(int fd, const char *data, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, data, len);
		if (n <= 0) {
			perror("write");
			exit(2);
		}
		data += n;
		len -= (size_t)n;
	}
}

static int read_exact(int fd, unsigned char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = read(fd, buf, len);
		if (n <= 0)
			return -1;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Reads the response head byte by byte (so nothing after it is consumed); returns its status. */
static int read_head(int fd)
{
	char head[8192];
	size_t len = 0;
	int status = 0;

	while (len < sizeof(head) - 1) {
		if (read(fd, head + len, 1) != 1)
			break;
		len++;
		if (len >= 4 && memcmp(head + len - 4, "\r\n\r\n", 4) == 0)
			break;
	}
	head[len] = '\0';
	if (sscanf(head, "HTTP/%*d.%*d %d", &status) != 1) {
		fprintf(stderr, "bad answer: %s\n", head);
		exit(3);
	}
	return status;
}

static int get(const char *path)
{
	char request[4096];
	char buf[65536];
	ssize_t n;
	int fd = connect_socket();

	snprintf(request, sizeof(request), "GET %s HTTP/1.0\r\nHost: lxd\r\n\r\n", path);
	send_all(fd, request, strlen(request));
	printf("%d\n", read_head(fd));
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		fwrite(buf, 1, (size_t)n, stdout);
	return 0;
}

static int watch(const char *path, int count)
{
	char request[4096];
	unsigned char frame[10];
	int fd = connect_socket();
	int status;

	snprintf(request, sizeof(request),
		 "GET %s HTTP/1.1\r\nHost: lxd\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
		 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
		 path);
	send_all(fd, request, strlen(request));
	status = read_head(fd);
	if (status != 101) {
		printf("%d\n", status);
		return 3;
	}
	printf("open\n");
	fflush(stdout);
	while (count > 0) {
		unsigned long long len;
		unsigned char *payload;
		int opcode;

		if (read_exact(fd, frame, 2) < 0)
			return 3;
		opcode = frame[0] & 0x0f;
		len = frame[1] & 0x7f; /* a server's frames are never masked */
		if (len == 126) {
			if (read_exact(fd, frame, 2) < 0)
				return 3;
			len = ((unsigned long long)frame[0] << 8) | frame[1];
		} else if (len == 127) {
			if (read_exact(fd, frame, 8) < 0)
				return 3;
			len = 0;
			for (int i = 0; i < 8; i++)
				len = (len << 8) | frame[i];
		}
		if (len > (1 << 20))
			return 3;
		payload = malloc(len + 1);
		if (payload == NULL || read_exact(fd, payload, len) < 0)
			return 3;
		if (opcode == 8)
			return 3; /* closed before COUNT messages came */
		if (opcode == 1) {
			fwrite(payload, 1, len, stdout);
			printf("\n");
			fflush(stdout);
			count--;
		}
		free(payload);
	}
	return 0;
}

int main(int argc, char **argv)
{
	alarm(30);
	if (argc > 3 && strcmp(argv[1], "-u") == 0) {
		int id = atoi(argv[2]);

		if (setgid(id) < 0 || setuid(id) < 0) {
			perror("setuid");
			return 2;
		}
		argc -= 2;
		argv += 2;
	}
	if (argc == 2)
		return get(argv[1]);
	if (argc == 4 && strcmp(argv[1], "-w") == 0)
		return watch(argv[2], atoi(argv[3]));
	fprintf(stderr, "usage: devlxd-client PATH | -w PATH COUNT\n");
	return 1;
}
