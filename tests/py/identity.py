# What an AF_UNIX server learns of its clients, and what the kernel lets a client that dropped
# its privileges do: printed as relations (pids differ between runs), the same bare and under
# socksify.
import os, socket, struct, sys, tempfile

SO_MARK = 36
d = tempfile.mkdtemp()
os.chmod(d, 0o777)
out = []

def say(*a):
    out.append(' '.join(str(x) for x in a))

def peercred(conn):
    return struct.unpack('3i', conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))

def drop():
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)

def child(f):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            msg = f()
        except OSError as e:
            msg = 'errno %d' % e.errno
        os.write(w, msg.encode())
        os._exit(0)
    os.close(w)
    msg = b''
    while True:
        b = os.read(r, 4096)
        if not b:
            break
        msg += b
    os.close(r)
    os.waitpid(pid, 0)
    return pid, msg.decode()

# 1. A stream client's credentials, as the server sees them (SO_PEERCRED).
path = os.path.join(d, 'stream.sock')
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(path)
os.chmod(path, 0o777)
srv.listen(8)

def connect_and_hold():
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(path)
    c.recv(1)
    return 'connected'

for who, f in [('as is', connect_and_hold), ('dropped', lambda: (drop(), connect_and_hold())[1])]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            f()
        except OSError as e:
            print('child errno', e.errno, file=sys.stderr)
        os._exit(0)
    conn, _ = srv.accept()
    p, u, g = peercred(conn)
    say('stream', who, 'peer pid is the child:', p == pid, 'uid', u, 'gid', g)
    conn.send(b'x')
    conn.close()
    os.waitpid(pid, 0)

# 2. A relative path, from the child's own working directory.
os.chdir(d)
def relative():
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect('stream.sock')
    return 'relative connect ok'
pid = os.fork()
if pid == 0:
    try:
        relative()
    except OSError as e:
        pass
    os._exit(0)
conn, _ = srv.accept()
say('relative path peer pid is the child:', peercred(conn)[0] == pid)
conn.close()
os.waitpid(pid, 0)

# 3. Datagrams to a path, with SO_PASSCRED at the receiver: the sender's pid and ids arrive,
# both implicit and sent explicitly (SCM_CREDENTIALS).
dpath = os.path.join(d, 'dgram.sock')
rcv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
rcv.bind(dpath)
os.chmod(dpath, 0o777)
rcv.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)

def send_plain():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    return 'sent %d' % s.sendto(b'plain', dpath)

def send_creds():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    creds = struct.pack('3i', os.getpid(), os.getuid(), os.getgid())
    return 'sent %d' % s.sendmsg([b'creds'], [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, creds)], 0, dpath)

def send_relative():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    return 'sent %d' % s.sendto(b'rel', 'dgram.sock')

for who, f in [('plain', send_plain), ('creds', send_creds), ('relative', send_relative),
               ('dropped', lambda: (drop(), send_plain())[1])]:
    pid, msg = child(f)
    say('dgram', who, msg)
    if msg.startswith('sent'):
        data, anc, flags, addr = rcv.recvmsg(100, socket.CMSG_SPACE(12))
        for level, ty, v in anc:
            if level == socket.SOL_SOCKET and ty == socket.SCM_CREDENTIALS:
                p, u, g = struct.unpack('3i', v[:12])
                say('  got', data.decode(), 'pid is the sender:', p == pid, 'uid', u, 'gid', g)

# 4. A datagram to a path the dropped sender may not write: the kernel refuses it (EACCES).
os.chmod(dpath, 0o700)
pid, msg = child(lambda: (drop(), send_plain())[1])
say('dgram to a private path, dropped:', msg)

# 5. Control data the kernel checks the sender's capabilities for (SO_MARK) on an internet
# socket: as root it is sent; after dropping to nobody it is refused.
def marked():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    n = s.sendmsg([b'mark'], [(socket.SOL_SOCKET, SO_MARK, struct.pack('I', 7))], 0, ('127.0.0.1', 9))
    return 'sent %d' % n
say('SO_MARK as root:', child(marked)[1])
say('SO_MARK dropped:', child(lambda: (drop(), marked())[1])[1])

# ... and after dropping, in a user namespace of its own (where it holds every capability, over
# nothing of the host's): refused too.
def own_namespace():
    import ctypes
    drop()
    if ctypes.CDLL(None, use_errno=True).unshare(0x10000000) != 0:  # CLONE_NEWUSER
        return 'no user namespace'
    return marked()
say('SO_MARK dropped, in its own user namespace:', child(own_namespace)[1])

# 6. An abstract address and a socketpair carrying a descriptor (SCM_RIGHTS).
abstract = b'\0socksify-identity-%d' % os.getpid()
a = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
a.bind(abstract)
a.listen(1)
pid = os.fork()
if pid == 0:
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(abstract)
    c.recv(1)
    os._exit(0)
conn, _ = a.accept()
say('abstract peer pid is the child:', peercred(conn)[0] == pid)
conn.send(b'x')
os.waitpid(pid, 0)
x, y = socket.socketpair()
r, w = os.pipe()
x.sendmsg([b'fd'], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack('i', w))])
msg, fds, _, _ = socket.recv_fds(y, 10, 1)
os.write(fds[0], b'ok')
say('SCM_RIGHTS:', msg.decode(), os.read(r, 2).decode())

# 7. A blocking stream send larger than the socket's buffer: the kernel sends it all.
import threading
x, y = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
x.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
big = b'y' * (1 << 20)
got = []
def drain():
    n = 0
    while n < len(big):
        n += len(y.recv(65536))
    got.append(n)
t = threading.Thread(target=drain)
t.start()
sent = x.send(big)
t.join()
say('blocking stream send of 1 MiB:', sent == len(big), got == [len(big)])
big = b'z' * 600000
got.clear()
t = threading.Thread(target=drain)
t.start()
sent = x.sendmsg([big[:250000], big[250000:]])
t.join()
say('blocking stream sendmsg of 600,000 bytes in two pieces:', sent == len(big), got == [len(big)])
print('\n'.join(out))
