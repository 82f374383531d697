'''A python-dbusmock template playing iwd (net.connman.iwd) for proxy-wifi's
tests of its iwd backend.

Loaded with
`python3 -m dbusmock --system --template tests/iwd_mock.py -p '{"state_dir": DIR}'`.
It models what the backend relies on, as iwd 2.3 behaves (measured, see
docs/iwd.md): an object manager at /, Daemon.GetInfo with the state
directory, stations (Device + Station + StationDiagnostic), Network objects
whose KnownNetwork follows the files in the state directory (polled every
50 ms, like iwd's inotify watch), hidden networks that only appear in a scan
when a file with Hidden=true exists, Network.Connect that needs a known
network for PSK (else NoAgent, as iwd without an agent) and, after a failed
handshake, fails once more with NoAgent (iwd asks its agent again), and
signal level reports to a registered SignalLevelAgent.

Controls on the org.freedesktop.DBus.Mock interface of /:
- AddStation(name, mac) -> path; RemoveStation(path)
- AddNetwork(station, ssid, type, signal_dbm, bssid, hidden)
- QueueNetwork(station, ssid, type, signal_dbm, bssid): appears at the next
  scan's end
- SetScanBehaviour(station, mode, delay_ms): "ok" or "refuse" (Busy)
- SetConnectBehaviour(station, mode): "ok" or "fail" (net.connman.iwd.Failed)
- HostConnect(station, ssid, type): the host connects by itself
- LoseLink(station): the access point vanished
- Flap(station, ssid, type): the host connects and loses the link at once
- EmitSignalLevel(station, level): Changed() to the registered agent
'''

import os

import dbus
from gi.repository import GLib

import dbusmock
from dbusmock import MOCK_IFACE

BUS_NAME = 'net.connman.iwd'
MAIN_OBJ = '/'
MAIN_IFACE = 'org.freedesktop.DBus.ObjectManager'
SYSTEM_BUS = True
IS_OBJECT_MANAGER = True

OM_IFACE = 'org.freedesktop.DBus.ObjectManager'
DAEMON_IFACE = 'net.connman.iwd.Daemon'
DEVICE_IFACE = 'net.connman.iwd.Device'
STATION_IFACE = 'net.connman.iwd.Station'
DIAG_IFACE = 'net.connman.iwd.StationDiagnostic'
NETWORK_IFACE = 'net.connman.iwd.Network'
ROOT = '/net/connman/iwd'


def _err(name, text):
    return dbus.exceptions.DBusException(text, name='net.connman.iwd.' + name)


def _file_name(ssid, kind):
    raw = ssid.encode()
    plain = raw and all(chr(b).isalnum() and b < 128 or chr(b) in ' _-' for b in raw)
    stem = ssid if plain else '=' + raw.hex()
    return f'{stem}.{kind}'


class State:
    state_dir = None
    stations = {}   # path -> dict
    count = 0


def _profile(ssid, kind):
    try:
        with open(os.path.join(State.state_dir, _file_name(ssid, kind)), encoding='utf-8') as f:
            return f.read()
    except OSError:
        return None


def _set_state(st, state):
    obj = dbusmock.get_object(st['path'])
    obj.Set(STATION_IFACE, 'State', dbus.String(state))


def _add_network_object(st, net):
    path = f"{st['path']}/{net['ssid'].encode().hex()}_{net['type']}"
    net['path'] = path
    st['visible'][path] = net
    dbusmock.get_object('/').AddObject(path, NETWORK_IFACE, {
        'Name': dbus.String(net['ssid']),
        'Type': dbus.String(net['type']),
        'Connected': dbus.Boolean(False),
        'Device': dbus.ObjectPath(st['path']),
    }, [])
    obj = dbusmock.get_object(path)
    obj.AddMethod(NETWORK_IFACE, 'Connect', '', '', lambda o: _connect(st, net))
    _refresh_known()


def _link_up(st, net):
    _set_state(st, 'connecting')
    obj = dbusmock.get_object(st['path'])
    obj.props[STATION_IFACE]['ConnectedNetwork'] = dbus.ObjectPath(net['path'])
    st['connected'] = net
    dbusmock.get_object(net['path']).Set(NETWORK_IFACE, 'Connected', dbus.Boolean(True))
    _set_state(st, 'connected')


def _link_down(st):
    net = st.get('connected')
    if net is None:
        return
    st['connected'] = None
    obj = dbusmock.get_object(st['path'])
    obj.props[STATION_IFACE].pop('ConnectedNetwork', None)
    if net['path'] in dbusmock.get_objects():
        dbusmock.get_object(net['path']).Set(NETWORK_IFACE, 'Connected', dbus.Boolean(False))
    _set_state(st, 'disconnected')


def _connect(st, net):
    if net['type'] == 'psk':
        if 'KnownNetwork' not in dbusmock.get_object(net['path']).props[NETWORK_IFACE]:
            raise _err('NoAgent', 'No Agent registered')
        # iwd 2.3 (network.c): after a failed handshake the network object
        # asks the agent once more on its next Connect, known key or not,
        # and clears that flag as it asks.
        if net.get('ask_passphrase'):
            net['ask_passphrase'] = False
            raise _err('NoAgent', 'No Agent registered')
    if st['connected'] is not None:
        _link_down(st)
    if st['connect_mode'] == 'fail':
        _set_state(st, 'connecting')
        _set_state(st, 'disconnected')
        if net['type'] == 'psk':
            net['ask_passphrase'] = True
        raise _err('Failed', 'Operation failed')
    _link_up(st, net)


def _disconnect(st):
    if st['connected'] is None:
        raise _err('NotConnected', 'Not connected')
    _link_down(st)


def _scan(st):
    if st['scan_mode'] == 'refuse':
        raise _err('Busy', 'Operation failed')
    obj = dbusmock.get_object(st['path'])
    obj.Set(STATION_IFACE, 'Scanning', dbus.Boolean(True))

    def finish():
        for net in st['queued']:
            _add_network_object(st, net)
        st['queued'] = []
        for net in list(st['hidden']):
            profile = _profile(net['ssid'], net['type'])
            if profile is not None and 'Hidden=true' in profile:
                st['hidden'].remove(net)
                _add_network_object(st, net)
        obj.Set(STATION_IFACE, 'Scanning', dbus.Boolean(False))
        return False

    GLib.timeout_add(st['scan_delay_ms'], finish)


def _ordered(st):
    nets = sorted(st['visible'].values(), key=lambda n: -n['signal'])
    return dbus.Array([(dbus.ObjectPath(n['path']), dbus.Int16(n['signal'] * 100)) for n in nets],
                      signature='(on)')


def _diagnostics(st):
    net = st.get('connected')
    if net is None:
        raise _err('NotConnected', 'Not connected')
    return dbus.Dictionary({'ConnectedBss': dbus.String(net['bssid']),
                            'Frequency': dbus.UInt32(2437)}, signature='sv')


def _refresh_known():
    for st in State.stations.values():
        for net in list(st['visible'].values()):
            if net['path'] not in dbusmock.get_objects():
                continue
            obj = dbusmock.get_object(net['path'])
            known = _profile(net['ssid'], net['type']) is not None
            has = 'KnownNetwork' in obj.props[NETWORK_IFACE]
            if known and not has:
                known_path = dbus.ObjectPath(f"{ROOT}/{net['ssid'].encode().hex()}_{net['type']}")
                obj.props[NETWORK_IFACE]['KnownNetwork'] = known_path
                obj.EmitSignal('org.freedesktop.DBus.Properties', 'PropertiesChanged', 'sa{sv}as',
                               [NETWORK_IFACE,
                                dbus.Dictionary({'KnownNetwork': known_path}, signature='sv'),
                                dbus.Array([], signature='s')])
            elif not known and has:
                del obj.props[NETWORK_IFACE]['KnownNetwork']
                obj.EmitSignal('org.freedesktop.DBus.Properties', 'PropertiesChanged', 'sa{sv}as',
                               [NETWORK_IFACE, dbus.Dictionary({}, signature='sv'),
                                ['KnownNetwork']])
                # iwd drops a connection whose known network was forgotten.
                if st.get('connected') is net:
                    _link_down(st)
    return True


def load(mock, parameters):
    State.state_dir = parameters.get('state_dir', '/var/lib/iwd')
    State.stations = {}
    mock.AddObject(ROOT, DAEMON_IFACE, {}, [])
    dbusmock.get_object(ROOT).AddMethod(
        DAEMON_IFACE, 'GetInfo', '', 'a{sv}',
        lambda o: dbus.Dictionary({'StateDirectory': dbus.String(State.state_dir),
                                   'Version': dbus.String('2.3')}, signature='sv'))
    GLib.timeout_add(50, _refresh_known)


@dbus.service.method(MOCK_IFACE, in_signature='ss', out_signature='s')
def AddStation(self, name, mac):
    State.count += 1
    path = f'{ROOT}/0/{State.count + 2}'
    st = {'path': path, 'visible': {}, 'hidden': [], 'queued': [], 'connected': None,
          'scan_mode': 'ok', 'scan_delay_ms': 200, 'connect_mode': 'ok', 'agent': None}
    State.stations[path] = st
    device_props = {'Name': dbus.String(name), 'Address': dbus.String(mac),
                    'Powered': dbus.Boolean(True), 'Mode': dbus.String('station')}
    station_props = {'State': dbus.String('disconnected'), 'Scanning': dbus.Boolean(False)}
    self.AddObject(path, DEVICE_IFACE, device_props, [])
    obj = dbusmock.get_object(path)
    obj.props[STATION_IFACE] = station_props
    obj.props[DIAG_IFACE] = {}
    obj.AddMethod(STATION_IFACE, 'Scan', '', '', lambda o: _scan(st))
    obj.AddMethod(STATION_IFACE, 'Disconnect', '', '', lambda o: _disconnect(st))
    obj.AddMethod(STATION_IFACE, 'GetOrderedNetworks', '', 'a(on)', lambda o: _ordered(st))
    obj.AddMethod(STATION_IFACE, 'RegisterSignalLevelAgent', 'oan', '',
                  lambda o, agent, levels: st.update(agent=str(agent)))
    obj.AddMethod(STATION_IFACE, 'UnregisterSignalLevelAgent', 'o', '',
                  lambda o, agent: st.update(agent=None))
    obj.AddMethod(DIAG_IFACE, 'GetDiagnostics', '', 'a{sv}', lambda o: _diagnostics(st))
    # The stock AddObject announced only the Device interface.
    self.EmitSignal(OM_IFACE, 'InterfacesAdded', 'oa{sa{sv}}',
                    [dbus.ObjectPath(path), {DEVICE_IFACE: device_props,
                                             STATION_IFACE: station_props}])
    return path


@dbus.service.method(MOCK_IFACE, in_signature='s', out_signature='')
def RemoveStation(self, path):
    st = State.stations.pop(path)
    for net in st['visible'].values():
        self.RemoveObject(net['path'])
    self.RemoveObject(path)
    self.EmitSignal(OM_IFACE, 'InterfacesRemoved', 'oas',
                    [dbus.ObjectPath(path), [DEVICE_IFACE, STATION_IFACE, DIAG_IFACE]])


@dbus.service.method(MOCK_IFACE, in_signature='sssisb', out_signature='')
def AddNetwork(self, station, ssid, kind, signal, bssid, hidden):
    st = State.stations[station]
    net = {'ssid': str(ssid), 'type': str(kind), 'signal': int(signal), 'bssid': str(bssid)}
    if hidden:
        st['hidden'].append(net)
    else:
        _add_network_object(st, net)


@dbus.service.method(MOCK_IFACE, in_signature='sssis', out_signature='')
def QueueNetwork(self, station, ssid, kind, signal, bssid):
    State.stations[station]['queued'].append(
        {'ssid': str(ssid), 'type': str(kind), 'signal': int(signal), 'bssid': str(bssid)})


@dbus.service.method(MOCK_IFACE, in_signature='ssu', out_signature='')
def SetScanBehaviour(self, station, mode, delay_ms):
    st = State.stations[station]
    st['scan_mode'] = str(mode)
    st['scan_delay_ms'] = int(delay_ms)


@dbus.service.method(MOCK_IFACE, in_signature='ss', out_signature='')
def SetConnectBehaviour(self, station, mode):
    State.stations[station]['connect_mode'] = str(mode)


@dbus.service.method(MOCK_IFACE, in_signature='sss', out_signature='')
def HostConnect(self, station, ssid, kind):
    st = State.stations[station]
    for net in st['visible'].values():
        if net['ssid'] == ssid and net['type'] == kind:
            _link_up(st, net)
            return
    raise _err('NotFound', 'no such network')


@dbus.service.method(MOCK_IFACE, in_signature='s', out_signature='')
def LoseLink(self, station):
    _link_down(State.stations[station])


@dbus.service.method(MOCK_IFACE, in_signature='sss', out_signature='')
def Flap(self, station, ssid, kind):
    HostConnect(self, station, ssid, kind)
    _link_down(State.stations[station])


@dbus.service.method(MOCK_IFACE, in_signature='sy', out_signature='')
def EmitSignalLevel(self, station, level):
    st = State.stations[station]
    if st['agent'] is None:
        raise _err('NotFound', 'no agent registered')
    bus = self.connection
    # The mock does not know which client registered: it tells every one
    # that exports the agent path (only the backend does).
    for name in bus.list_names():
        if not name.startswith(':'):
            continue
        bus.call_async(name, st['agent'], 'net.connman.iwd.SignalLevelAgent', 'Changed', 'oy',
                       (dbus.ObjectPath(st['path']), dbus.Byte(level)), None, lambda e: None)
