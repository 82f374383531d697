'''python-dbusmock's NetworkManager template, plus what proxy-wifi's tests need.

Loaded with `python3 -m dbusmock --template tests/networkmanager_mock.py`.
Everything of the stock template stays (AddWiFiDevice, AddAccessPoint,
AddWiFiConnection, AddActiveConnection, SetDeviceActive, SetProperty, ...);
this adds, on the org.freedesktop.DBus.Mock interface of /org/freedesktop:

- AddWiFiDeviceFull(name, iface, perm_mac, state, last_scan): a Wi-Fi device
  with a PermHwAddress of its own, ActiveAccessPoint, optionally LastScan,
  a RequestScan that behaves like NetworkManager's, and Device.Disconnect.
- RemoveDevice(path): the device goes away (DeviceRemoved).
- SetScanBehaviour(path, mode, delay_ms): mode "ok" finishes a requested scan
  after delay_ms (LastScan changes, queued access points appear); "refuse"
  answers RequestScan with NotAllowed, as a rate-limited NetworkManager does.
- QueueAccessPoint(path, name, ssid, mac, freq, strength, security): an
  access point that appears when the next scan finishes.
- SetActivationBehaviour(path, mode, reason): how AddAndActivateConnection2
  ends on that device: "ok" (ACTIVATED, ActiveAccessPoint set), "fail"
  (FAILED with reason, then DISCONNECTED) or "hang" (stays in PREPARE).
- SetDeviceState(path, state, reason): the device changes state (StateChanged),
  e.g. to or from 10 (unmanaged).
- SetActivationBehaviour modes "link" (the link comes up: IP_CONFIG with the
  active connection and access point, and stays there, as while DHCP runs)
  and "fail-racing-delete" (fails like "fail", and the profile's Delete
  then fails with "connection was deleted" while removing it, as when
  NetworkManager drops a volatile profile itself).
- SetScanBehaviour mode "drop-once": the next RequestScan is accepted but
  never finishes (wpa_supplicant rejected it), later ones are "ok".
- AddAndActivateConnection2 on the manager object (the stock template only
  has the older AddAndActivateConnection), recording its arguments.
'''

import dbus
from gi.repository import GLib

import dbusmock
from dbusmock import MOCK_IFACE
from dbusmock.templates.networkmanager import *  # noqa: F401,F403
from dbusmock.templates.networkmanager import load as _stock_load
from dbusmock.templates.networkmanager import (
    ACCESS_POINT_IFACE, DEVICE_IFACE, MANAGER_IFACE, MANAGER_OBJ,
    SETTINGS_OBJ, WIRELESS_DEVICE_IFACE, DeviceState)

PREPARE = 40


def _manager():
    return dbusmock.get_object(MANAGER_OBJ)


def _emit_state(dev, new, reason):
    old = dev.Get(DEVICE_IFACE, 'State')
    dev.Set(DEVICE_IFACE, 'State', dbus.UInt32(new))
    dev.Set(DEVICE_IFACE, 'StateReason', (dbus.UInt32(new), dbus.UInt32(reason)))
    dev.EmitSignal(DEVICE_IFACE, 'StateChanged', 'uuu',
                   [dbus.UInt32(new), dbus.UInt32(old), dbus.UInt32(reason)])


def _request_scan(dev, options):
    if dev.scan_mode == 'drop-once':
        dev.scan_mode = 'ok'
        return
    if dev.scan_mode == 'refuse':
        raise dbus.exceptions.DBusException(
            'Scanning not allowed immediately following previous scan',
            name='org.freedesktop.NetworkManager.Device.NotAllowed')
    main = dbusmock.get_object('/org/freedesktop')

    def finish():
        for ap in dev.queued_aps:
            main.AddAccessPoint(dev.path, *ap)
        dev.queued_aps = []
        if 'LastScan' in dev.props[WIRELESS_DEVICE_IFACE]:
            dev.last_scan += 1000
            dev.Set(WIRELESS_DEVICE_IFACE, 'LastScan', dbus.Int64(dev.last_scan))
        return False

    GLib.timeout_add(dev.scan_delay_ms, finish)


def _disconnect(dev):
    active = dev.Get(DEVICE_IFACE, 'ActiveConnection')
    if str(active) == '/':
        raise dbus.exceptions.DBusException(
            'This device is not active', name='org.freedesktop.NetworkManager.Device.NotActive')
    dev.Set(WIRELESS_DEVICE_IFACE, 'ActiveAccessPoint', dbus.ObjectPath('/'))
    dbusmock.get_object('/org/freedesktop').RemoveActiveConnection(dev.path, active)


@dbus.service.method(MOCK_IFACE, in_signature='sssib', out_signature='s')
def AddWiFiDeviceFull(self, device_name, iface_name, perm_mac, state, last_scan):
    path = self.AddWiFiDevice(device_name, iface_name, state)
    dev = dbusmock.get_object(path)
    # Our signal consumer only reads these after this method has returned:
    # the mock handles one call at a time.
    dev.props[WIRELESS_DEVICE_IFACE]['PermHwAddress'] = dbus.String(perm_mac)
    dev.props[WIRELESS_DEVICE_IFACE]['HwAddress'] = dbus.String(perm_mac)
    dev.props[WIRELESS_DEVICE_IFACE]['ActiveAccessPoint'] = dbus.ObjectPath('/')
    dev.last_scan = 5000
    if last_scan:
        dev.props[WIRELESS_DEVICE_IFACE]['LastScan'] = dbus.Int64(dev.last_scan)
    dev.scan_mode = 'ok'
    dev.scan_delay_ms = 200
    dev.queued_aps = []
    dev.activation = ('ok', 0)
    dev.AddMethod(WIRELESS_DEVICE_IFACE, 'RequestScan', 'a{sv}', '',
                  lambda obj, options: _request_scan(obj, options))
    dev.AddMethod(DEVICE_IFACE, 'Disconnect', '', '', lambda obj: _disconnect(obj))
    return path


@dbus.service.method(MOCK_IFACE, in_signature='s', out_signature='')
def RemoveDevice(self, path):
    nm = _manager()
    devices = nm.Get(MANAGER_IFACE, 'Devices')
    devices.remove(dbus.ObjectPath(path))
    nm.Set(MANAGER_IFACE, 'Devices', devices)
    nm.EmitSignal(MANAGER_IFACE, 'DeviceRemoved', 'o', [dbus.ObjectPath(path)])
    self.object_manager_emit_removed(path)
    self.RemoveObject(path)


@dbus.service.method(MOCK_IFACE, in_signature='ssu', out_signature='')
def SetScanBehaviour(self, path, mode, delay_ms):
    dev = dbusmock.get_object(path)
    dev.scan_mode = str(mode)
    dev.scan_delay_ms = int(delay_ms)


@dbus.service.method(MOCK_IFACE, in_signature='ssssuuuyu', out_signature='')
def QueueAccessPoint(self, path, name, ssid, mac, mode, freq, rate, strength, security):
    dbusmock.get_object(path).queued_aps.append(
        (name, ssid, mac, mode, freq, rate, strength, security))


@dbus.service.method(MOCK_IFACE, in_signature='suu', out_signature='')
def SetDeviceState(self, path, state, reason):
    _emit_state(dbusmock.get_object(path), int(state), int(reason))


@dbus.service.method(MOCK_IFACE, in_signature='ssu', out_signature='')
def SetActivationBehaviour(self, path, mode, reason):
    dbusmock.get_object(path).activation = (str(mode), int(reason))


def _add_and_activate2(nm, settings, dev_path, specific, options):
    main = dbusmock.get_object('/org/freedesktop')
    dev = dbusmock.get_object(dev_path)
    conn_path = dbusmock.get_object(SETTINGS_OBJ).SettingsAddConnection(settings)
    count = 0
    active_connections = nm.Get(MANAGER_IFACE, 'ActiveConnections')
    while dbus.ObjectPath(f'/org/freedesktop/NetworkManager/ActiveConnection/{count}') \
            in active_connections or \
            f'/org/freedesktop/NetworkManager/ActiveConnection/{count}' in dbusmock.get_objects():
        count += 1
    active_path = f'/org/freedesktop/NetworkManager/ActiveConnection/{count}'
    mode, reason = dev.activation
    ssid = bytes(settings['802-11-wireless']['ssid'])

    def run():
        _emit_state(dev, PREPARE, 0)
        if mode == 'hang':
            return False
        if mode in ('fail', 'fail-racing-delete'):
            if mode == 'fail-racing-delete':
                conn = dbusmock.get_object(conn_path)
                original = conn.ConnectionDelete

                def racing_delete(obj):
                    original(obj)
                    raise dbus.exceptions.DBusException(
                        'connection was deleted',
                        name='org.freedesktop.NetworkManager.Settings.Connection.Failed')
                conn.ConnectionDelete = racing_delete
            _emit_state(dev, DeviceState.FAILED, reason)
            _emit_state(dev, DeviceState.DISCONNECTED, reason)
            return False
        ap = '/'
        for candidate in dev.access_points:
            if bytes(dbusmock.get_object(candidate).Get(ACCESS_POINT_IFACE, 'Ssid')) == ssid:
                ap = candidate
        dev.Set(WIRELESS_DEVICE_IFACE, 'ActiveAccessPoint', dbus.ObjectPath(ap))
        if mode == 'link':
            main.AddObject(active_path, 'org.freedesktop.NetworkManager.Connection.Active', {
                'Devices': dbus.Array([dbus.ObjectPath(dev_path)], signature='o'),
                'Connection': dbus.ObjectPath(conn_path),
                'SpecificObject': dbus.ObjectPath(ap),
                'State': dbus.UInt32(1),
                'Id': str(settings['connection'].get('id', '')),
                'Uuid': str(settings['connection'].get('uuid', '')),
                'Type': '802-11-wireless',
            }, [])
            dev.Set(DEVICE_IFACE, 'ActiveConnection', dbus.ObjectPath(active_path))
            _emit_state(dev, 70, 0)
            return False
        main.AddActiveConnection([dev_path], conn_path, ap, str(count),
                                 dbus.UInt32(2))
        return False

    GLib.timeout_add(50, run)
    return (dbus.ObjectPath(conn_path), dbus.ObjectPath(active_path),
            dbus.Dictionary({}, signature='sv'))


def load(mock, parameters):
    _stock_load(mock, parameters)
    nm = _manager()
    nm.AddMethod(MANAGER_IFACE, 'AddAndActivateConnection2', 'a{sa{sv}}ooa{sv}', 'ooa{sv}',
                 lambda obj, settings, dev, specific, options:
                 _add_and_activate2(obj, settings, dev, specific, options))
